"""The account ingest tests read mail from the same real Dovecot as the source tests."""

from tests.shared.sources.conftest import dovecot, mail_ca, mail_ca_bundle, mail_user, trust_mail_ca  # noqa: F401
