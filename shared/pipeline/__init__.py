"""The pipeline after a source has read a mail: routes (where it goes), and the hand-off to the next system."""
