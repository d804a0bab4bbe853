"""What happens after sending: confirmation links, reminders, actions on one recipient."""
