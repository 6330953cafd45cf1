"""The pipeline every source feeds once a mail is in hand (`mail.py`, the seam): `ingest.py` runs its steps in
order, once, for every source: rules and routes (what is kept, where it goes), storing the files
(`attachments.py` for a listed mail, `rawmail.py` for a raw MIME; unpacked on the way), the blob layout and
storage (written once, manifest last), the hand-off, and the source's after-ingest action. It imports no
source; the poison queue is here too."""
