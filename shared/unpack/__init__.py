"""The unpack layer: bytes in, files out (attached mails, S/MIME, winmail.dat, zip), memory bounded.

It knows formats and nothing about sources or storage: a caller feeds it a stream and is asked for a
sink for each file found (`tree.Unpacker`, `tree.Handler`). The package's modules are imported where
used: this file imports nothing, so reading the settings (`options`) stays light.
"""
