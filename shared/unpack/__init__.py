"""The unpack layer: bytes in, files out (attached mails, S/MIME, winmail.dat, zip), memory bounded.

It knows formats and nothing about sources or storage: a caller feeds it a stream and opens a sink
for each file it finds.
"""
