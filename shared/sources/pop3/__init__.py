"""The POP3 source: a maildrop's new messages by UIDL, each spooled and streamed."""
