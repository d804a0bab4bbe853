"""Mail that comes back: bounces, delays, automatic replies and the offices' own replies.

Three doors lead to one handler (``handler.handle_message``): the IMAP poller (``imap``, run by
the scheduler), the inbound SMTP listener (``dispatch inbound serve``, for relays that forward
bounces) and one message from a file (``dispatch inbound receive``). ``classify`` reads a
message with the standards first (RFC 3464 delivery status notifications, RFC 3834 automatic
replies) and flufl.bounce's detectors for servers that send no standard report; ``reasons``
says a bounce's status code in plain Vietnamese.
"""
