"""Where mail comes from: each source lists what is new and hands over a message's parts as streams.

A source knows its protocol and nothing about blobs (DESIGN.md, "One pipeline, several sources"):
`graph` takes Microsoft Graph's change notifications and subscriptions, `imap` and `pop3` list what is
new since a cursor and hand over a message's MIME as an async iterator of bytes, in bounded memory;
the modules beside them (cursor, poll, fetch, jobs) are what the IMAP and POP3 accounts share. The
pipeline does the rest.
"""
