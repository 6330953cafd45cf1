"""Where mail comes from: each source lists what is new and hands over a message's parts as streams.

A source knows its protocol and nothing about blobs (DESIGN.md, "One pipeline, several sources"):
`graph` takes Microsoft Graph's change notifications and subscriptions, `imap` and `pop3` list what is
new since a cursor and hand over a message's MIME as an async iterator of bytes, in bounded memory;
the modules beside them (cursor, poll, fetch, jobs, accounts) are what the IMAP and POP3 accounts share.
Each source's ingest (`graph/ingest.py`, `accounts.py`) hands the pipeline one mail in hand
(`pipeline/mail.py`); the pipeline does the rest.
"""
