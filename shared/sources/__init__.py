"""Sources of mail other than Microsoft Graph: what is new in an account, and a message as a byte stream.

A source knows its protocol and nothing about blobs (DESIGN.md, "One pipeline, several sources"):
`imap` and `pop3` list what is new since a cursor and hand over a message's MIME as an async
iterator of bytes, in bounded memory; the pipeline does the rest.
"""
