"""E-mail: the outbox, composing messages, the sender and the SMTP client."""
