from __future__ import annotations

import pytest

from shared.errors import SettingsError
from shared.settings import MailboxFolder, parse_mailboxes, parse_settings


def test_defaults(env):
    s = parse_settings(env)
    assert s.authority == "https://login.microsoftonline.com/11111111-1111-1111-1111-111111111111"
    assert s.graph_scope == "https://graph.microsoft.com/.default"
    assert s.instance_discovery is True
    assert s.attachments_container == "mail-attachments"
    assert s.subscription_minutes == 10_080
    assert s.notification_url == "https://ingest.example.net/api/notifications"
    assert s.lifecycle_url == "https://ingest.example.net/api/lifecycle"


def test_mailboxes_split_on_first_slash():
    entries = parse_mailboxes(" A@Contoso.com ,b@contoso.com/Inbox/Sub folder/Deeper ")
    assert entries == (
        MailboxFolder("a@contoso.com", "Inbox"),
        MailboxFolder("b@contoso.com", "Inbox/Sub folder/Deeper"),
    )
    assert entries[1].segments == ("Inbox", "Sub folder", "Deeper")
    assert len({e.key for e in entries}) == 2


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("MAILBOXES", "", "MAILBOXES: required"),
        ("MAILBOXES", "a@x.com, a@x.com", "listed twice"),
        ("MAILBOXES", "a@x.com//Inbox", "empty mailbox or folder"),
        ("GRAPH_TENANT_ID", "", "GRAPH_TENANT_ID: required"),
        ("GRAPH_CLIENT_SECRET", "", "GRAPH_CLIENT_SECRET: required"),
        ("GRAPH_API_URL", "graph.microsoft.com", "GRAPH_API_URL: must be an absolute https URL"),
        ("GRAPH_AUTHORITY_HOST", "http://login.example", "GRAPH_AUTHORITY_HOST"),
        ("GRAPH_AUTH_MODE", "magic", "GRAPH_AUTH_MODE"),
        ("KEY_VAULT_URL", "", "KEY_VAULT_URL: required"),
        ("ATTACHMENTS_CONTAINER", "Bad_Name", "ATTACHMENTS_CONTAINER"),
        ("AzureWebJobsStorage", "", "AzureWebJobsStorage: required"),
        ("SUBSCRIPTION_LIFETIME_MINUTES", "20000", "between 45 and 10080"),
        ("KEY_VAULT_VERIFY_CHALLENGE_RESOURCE", "maybe", "true or false"),
    ],
)
def test_broken_setting_names_itself_in_one_line(env, name, value, needle):
    env[name] = value
    with pytest.raises(SettingsError) as caught:
        parse_settings(env)
    text = str(caught.value)
    assert needle in text
    assert text.startswith(f"setting {name}")
    assert "\n" not in text


def test_webhook_base_from_website_hostname(env):
    del env["WEBHOOK_BASE_URL"]
    env["WEBSITE_HOSTNAME"] = "func-ingest.azurewebsites.net"
    assert parse_settings(env).notification_url == "https://func-ingest.azurewebsites.net/api/notifications"


def test_missing_webhook_base_fails_when_needed(env):
    del env["WEBHOOK_BASE_URL"]
    s = parse_settings(env)
    with pytest.raises(SettingsError, match="WEBHOOK_BASE_URL"):
        _ = s.notification_url


def test_other_authority_turns_discovery_off(env):
    env["GRAPH_AUTHORITY_HOST"] = "https://127.0.0.1:8443"
    env["GRAPH_API_URL"] = "https://127.0.0.1:8443/v1.0"
    s = parse_settings(env)
    assert s.instance_discovery is False
    assert s.graph_scope == "https://127.0.0.1:8443/.default"


def test_identity_based_storage(env):
    del env["AzureWebJobsStorage"]
    env["AzureWebJobsStorage__blobServiceUri"] = "https://st.blob.core.windows.net"
    env["AzureWebJobsStorage__queueServiceUri"] = "https://st.queue.core.windows.net"
    s = parse_settings(env)
    assert s.storage.connection_string is None
    assert s.storage.blob_service_uri == "https://st.blob.core.windows.net"


def test_folder_by_key(settings):
    for entry in settings.mailboxes:
        assert settings.folder_by_key(entry.key) is entry
    assert settings.folder_by_key("0" * 16) is None
