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
        ("ATTACHMENT_EXTENSIONS", "pdf, ../x", "'../x' is not valid"),
        ("ATTACHMENT_CONTENT_TYPES", "application", "'application' is not valid"),
        ("ATTACHMENT_MAX_BYTES", "0", "between 1 and"),
        ("ATTACHMENT_MIN_BYTES", "200000000", "between 0 and"),
        ("ATTACHED_MAIL_MAX_DEPTH", "0", "between 1 and 10"),
        ("AFTER_INGEST", "archive", "'archive' is not one of"),
        ("AFTER_INGEST", "move:Inbox//x", "empty folder name"),
        ("AFTER_INGEST_BY_MAILBOX", "other@x.com=mark-read", "is not in MAILBOXES"),
        ("AFTER_INGEST_BY_MAILBOX", "a@contoso.com", "is not mailbox=actions"),
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


REFERENCE = "@Microsoft.KeyVault(SecretUri=https://kv-ingest.vault.azure.net/secrets/webhook-function-key/)"


@pytest.mark.parametrize("name", ["WEBHOOK_FUNCTION_KEY", "GRAPH_CLIENT_SECRET", "MAILBOXES", "ROUTES"])
def test_an_unresolved_key_vault_reference_is_refused_by_name(env, name):
    """Settings copied from a deployment keep the platform's references: a webhook URL must never carry one
    as its key, nor a client secret be one."""
    env[name] = f" {REFERENCE}"
    with pytest.raises(SettingsError) as caught:
        parse_settings(env)
    assert str(caught.value) == f"setting {name}: is a Key Vault reference that was not resolved to its secret's value"


def test_a_reference_in_a_setting_the_app_does_not_read_is_left_alone(env):
    env["SOME_OTHER_APP_SETTING"] = REFERENCE
    env["WEBHOOK_FUNCTION_KEY"] = "a-real-key"
    assert parse_settings(env).webhook_function_key == "a-real-key"


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


def test_graph_scope_defaults_to_the_graph_endpoints_origin(env):
    assert parse_settings(env).graph_scope == "https://graph.microsoft.com/.default"
    env["GRAPH_API_URL"] = "https://graph.microsoft.us/v1.0"  # a national cloud keeps working unset
    s = parse_settings(env)
    assert s.graph_scope == "https://graph.microsoft.us/.default"
    assert s.delegated_scopes == ("https://graph.microsoft.us/Mail.Read",)


def test_graph_scope_for_a_gateway(env):
    env["GRAPH_API_URL"] = "https://graph-gateway.contoso.com/v1.0"
    env["GRAPH_SCOPE"] = "https://graph.microsoft.com/.default"
    s = parse_settings(env)
    assert s.graph_api_url == "https://graph-gateway.contoso.com/v1.0"
    assert s.graph_scope == "https://graph.microsoft.com/.default"
    assert s.delegated_scopes == ("Mail.Read",)  # Graph's own permissions: bare names


@pytest.mark.parametrize("bad", ["https://graph.microsoft.com", "/.default", "Mail.Read", "https://a b/.default"])
def test_graph_scope_must_name_a_resource_and_default(env, bad):
    env["GRAPH_SCOPE"] = bad
    with pytest.raises(SettingsError, match=r"^setting GRAPH_SCOPE: must be a resource followed by /\.default") as exc:
        parse_settings(env)
    assert "\n" not in str(exc.value)


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


def test_attachment_rules_defaults_suit_document_capture(settings):
    rules = settings.rules
    assert rules.skip_reason("scan.pdf", "application/pdf", False, 10) is None
    assert rules.skip_reason("logo.png", "image/png", True, 10) == "inline image (INCLUDE_INLINE_ATTACHMENTS is off)"
    assert settings.unpack.attached_mail and settings.unpack.archives and settings.unpack.max_depth == 5
    assert settings.unpack.archive.max_files == 1000 and settings.smime_certificates == ()
    assert "ATTACHMENT_MAX_BYTES" in (rules.skip_reason("x.tif", None, False, 150 * 1024 * 1024 + 1) or "")


def test_extensions_or_content_types_allow(env):
    env["ATTACHMENT_EXTENSIONS"] = ".PDF, tif"
    env["ATTACHMENT_CONTENT_TYPES"] = "image/*"
    env["ATTACHMENT_MIN_BYTES"] = "100"
    env["INCLUDE_INLINE_ATTACHMENTS"] = "true"
    rules = parse_settings(env).rules
    assert rules.skip_reason("a.pdf", "application/octet-stream", False, 500) is None
    assert rules.skip_reason("photo.jpeg", "image/jpeg; name=photo.jpeg", True, 500) is None
    assert rules.skip_reason("notes.docx", "application/msword", False, 500) == (
        "type not allowed (.docx, application/msword)"
    )
    assert rules.skip_reason("a.pdf", None, False, 99) == "smaller than ATTACHMENT_MIN_BYTES (99 < 100 bytes)"
    env["ATTACHMENT_EXTENSIONS"] = "*"
    env["ATTACHMENT_CONTENT_TYPES"] = ""
    assert parse_settings(env).rules.skip_reason("any.thing", None, False, 500) is None


def test_after_ingest_global_and_per_mailbox_or_folder(env):
    env["MAILBOXES"] = "a@contoso.com, a@contoso.com/Inbox/Scans, b@contoso.com"
    env["AFTER_INGEST"] = "mark-read"
    env["AFTER_INGEST_BY_MAILBOX"] = (
        "A@contoso.com=category:Done; a@contoso.com/inbox/scans=move:Archive/Scans,mark-read"
    )
    s = parse_settings(env)
    a, scans, b = s.mailboxes
    assert str(s.after_ingest_for(b)) == "mark-read"
    assert str(s.after_ingest_for(a)) == "category:Done"
    assert str(s.after_ingest_for(scans)) == "mark-read,move:Archive/Scans"
    env["AFTER_INGEST"] = " none "
    env["AFTER_INGEST_BY_MAILBOX"] = ""
    assert not parse_settings(env).after_ingest_for(a).anything


def test_webhook_urls_carry_the_function_key(env):
    env["WEBHOOK_FUNCTION_KEY"] = "k+y/=="
    s = parse_settings(env)
    # Graph appends `&validationToken=...` to a URL with a query and posts to it as given (graph_facts §2).
    assert s.notification_url == "https://ingest.example.net/api/notifications?code=k%2By%2F%3D%3D"
    assert s.lifecycle_url == "https://ingest.example.net/api/lifecycle?code=k%2By%2F%3D%3D"
    assert "k+y" not in repr(s)
    env["WEBHOOK_FUNCTION_KEY"] = " "
    assert "?" not in parse_settings(env).notification_url


def test_unpack_depth_takes_the_old_name_when_the_new_one_is_not_set(env):
    env["ATTACHED_MAIL_MAX_DEPTH"] = "2"
    assert parse_settings(env).unpack.max_depth == 2
    env["UNPACK_MAX_DEPTH"] = "7"
    assert parse_settings(env).unpack.max_depth == 7
    env["UNPACK_MAX_DEPTH"] = "11"
    with pytest.raises(SettingsError, match="UNPACK_MAX_DEPTH"):
        parse_settings(env)
    del env["UNPACK_MAX_DEPTH"]
    env["ATTACHED_MAIL_MAX_DEPTH"] = "0"
    with pytest.raises(SettingsError, match="ATTACHED_MAIL_MAX_DEPTH"):
        parse_settings(env)


def test_archive_and_smime_settings(env):
    env.update({"EXTRACT_ARCHIVES": "false", "ARCHIVE_MAX_FILES": "10", "ARCHIVE_MAX_RATIO": "50"})
    env["SMIME_CERTIFICATES"] = " invoices-smime, ap-smime ,invoices-smime"
    settings = parse_settings(env)
    assert not settings.unpack.archives and settings.unpack.archive.max_files == 10
    assert settings.unpack.archive.max_ratio == 50 and settings.unpack.archive.max_bytes == 1024**3
    assert settings.smime_certificates == ("invoices-smime", "ap-smime")
    for name, value in [("ARCHIVE_MAX_FILES", "0"), ("ARCHIVE_MAX_BYTES", "12"), ("SMIME_CERTIFICATES", "a b")]:
        with pytest.raises(SettingsError, match=name):
            parse_settings({**env, name: value})


def test_save_message_and_body(env):
    assert parse_settings(env).save.message == "never" and parse_settings(env).save.body == "never"
    env.update({"SAVE_MESSAGE": "No-Files", "SAVE_BODY": "always"})
    save = parse_settings(env).save
    assert (save.message, save.body) == ("no-files", "always")
    assert save.wanted("no-files", files_kept=False) and not save.wanted("no-files", files_kept=True)
    with pytest.raises(SettingsError, match="SAVE_BODY"):
        parse_settings({**env, "SAVE_BODY": "sometimes"})
