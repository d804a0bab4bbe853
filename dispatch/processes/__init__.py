"""Long-running processes: the scheduler, the development runner, the SMTP sink."""
