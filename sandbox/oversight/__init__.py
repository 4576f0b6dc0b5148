"""What operators and security officers read: the audit log, what needs attention, the key
server's audit log explained, and usage receipts."""
