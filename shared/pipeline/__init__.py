"""The pipeline every source feeds once a mail is in hand: rules and routes (what is kept, where it goes),
the blob layout and storage (written once, manifest last), the poison queue, and the hand-off."""
