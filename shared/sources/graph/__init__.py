"""Microsoft 365 mailboxes through Microsoft Graph: credentials, subscriptions and their lifecycle,
the webhooks, delta resync, and reading a mail and its attachments for the pipeline."""
