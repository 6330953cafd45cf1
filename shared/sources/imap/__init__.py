"""The IMAP source: an account folder's new messages by UID cursor, each as a stream of MIME bytes."""
