"""Read models: status, lists, the leaders' pages, exports, the register, evidence."""
