"""Routes: parsing and validation, matching, decisions and path templates."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.errors import SettingsError
from shared.pipeline.layout import message_prefix, sanitize_name
from shared.pipeline.routes import (
    APP_ROOT,
    Attachment,
    MailFacts,
    RouteError,
    Template,
    decide,
    normalise_address,
    parse_routes,
)
from shared.pipeline.rules import AfterIngest
from shared.settings import parse_settings

RECEIVED = datetime(2026, 3, 7, 23, 30, tzinfo=UTC)


def mail(**fields: Any) -> MailFacts:
    values: dict[str, Any] = {
        "mailbox": "ap@contoso.com",
        "folder": "Inbox",
        "message_key": "abcdefghijklmnop",
        "received": RECEIVED,
        "sender": "billing@fabrikam.example",
        "subject": "Invoice 4711",
        "attachments": (Attachment("invoice.pdf", "application/pdf"),),
        "has_kept_file": True,
        **fields,
    }
    return MailFacts(**values)


def routes(*items: dict[str, Any]) -> Any:
    return parse_routes(json.dumps(list(items)))


def route_of(parsed: Any, facts: MailFacts) -> str:
    return decide(parsed, facts).route


# -- parsing and validation: every error names its route ---------------------------------------------

BAD: list[tuple[dict[str, Any], str]] = [
    (
        {"name": "subj", "match": {"subject": "(unclosed"}},
        "route 'subj': match.subject is not a valid regular expression",
    ),
    ({"name": "tok", "path": "{mailbox}/{year}/{messageKey}"}, "route 'tok': path has an unknown token {year}"),
    ({"name": "brace", "path": "{messageKey}/{yyyy"}, "route 'brace': path has an unmatched"),
    ({"name": "nokey", "path": "{mailbox}/{yyyy}"}, "route 'nokey': path must contain {messageKey}"),
    ({"name": "dots", "path": "../{messageKey}"}, "route 'dots': path folder '..'"),
    ({"name": "empty", "path": "a//{messageKey}"}, "route 'empty': path folder ''"),
    ({"name": "colon", "path": "c:{messageKey}"}, "route 'colon': path folder 'c:{messageKey}'"),
    ({"name": "upper", "container": "AP-Invoices"}, "route 'upper': container 'AP-Invoices' is not a valid"),
    ({"name": "dashes", "container": "ap--invoices"}, "route 'dashes': container 'ap--invoices'"),
    ({"name": "short", "container": "ap"}, "route 'short': container 'ap'"),
    ({"name": "field", "contianer": "x"}, "route 'field': unknown field 'contianer'"),
    ({"name": "mfield", "match": {"sender": "*@x.com"}}, "route 'mfield': match has an unknown field 'sender'"),
    ({"name": "addr", "match": {"from": "fabrikam.example"}}, "route 'addr': 'fabrikam.example' is not name@domain"),
    ({"name": "wild", "match": {"from": "bill*@x.com"}}, "route 'wild': 'bill*@x.com' is not name@domain"),
    ({"name": "kept", "match": {"noKeptFile": "yes"}}, "route 'kept': match.noKeptFile must be true or false"),
    ({"name": "dup", "match": {"duplicate": "yes"}}, "route 'dup': match.duplicate must be true or false"),
    ({"name": "prot", "match": {"protected": 1}}, "route 'prot': match.protected must be true or false"),
    ({"name": "tagdup", "tags": {"duplicate": "x"}}, "route 'tagdup': tag 'duplicate' is set by the app"),
    ({"name": "skip", "skip": True, "container": "spam"}, "route 'skip': a skip route stores nothing, so container"),
    ({"name": "tagkey", "tags": {"doc type!": "x"}}, "route 'tagkey': tag name 'doc type!'"),
    ({"name": "tagval", "tags": {"supplier": "Müller"}}, "route 'tagval': tag 'supplier': the value"),
    ({"name": "tagsys", "tags": {"route": "x"}}, "route 'tagsys': tag 'route' is set by the app"),
    (
        {"name": "many", "tags": {f"t{i}": "x" for i in range(3)}},
        "route 'many': tags has 3 tags; a route may add at most 2",
    ),
    (
        {"name": "auth", "match": {"senderAuthentication": "softfail"}},
        "route 'auth': match.senderAuthentication: result",
    ),
    (
        {"name": "authm", "match": {"senderAuthentication": {"arc": "pass"}}},
        "route 'authm': match.senderAuthentication has an unknown method 'arc'",
    ),
    (
        {"name": "authv", "match": {"senderAuthentication": {"dmarc": []}}},
        "route 'authv': match.senderAuthentication.dmarc",
    ),
    ({"name": "after", "afterIngest": "archive"}, "route 'after': 'archive' is not one of"),
    ({"name": "default"}, "route 'default': the name is reserved"),
    ({"match": {}}, "route 2: name is required"),
    ({"name": "with space"}, "route 'with space': name is required"),
]


@pytest.mark.parametrize(("raw", "error"), BAD, ids=[str(b[0].get("name", "unnamed")) for b in BAD])
def test_a_bad_route_is_refused_with_its_name_and_the_problem(raw: dict[str, Any], error: str):
    with pytest.raises(RouteError) as caught:
        routes({"name": "fine", "match": {"from": "*@ok.example"}}, raw)
    text = str(caught.value)
    assert text.startswith(error) and "\n" not in text


def test_names_are_unique_and_the_list_is_json():
    with pytest.raises(RouteError, match="route 'A': the name is used twice"):
        routes({"name": "a"}, {"name": "A"})
    with pytest.raises(RouteError, match="not valid JSON"):
        parse_routes("[{")
    with pytest.raises(RouteError, match="must be a JSON list"):
        parse_routes('{"name": "a"}')


def test_settings_stop_start_up_naming_routes_or_routes_file(env: dict[str, str], tmp_path: Path):
    env["ROUTES"] = json.dumps([{"name": "ap", "match": {"subject": "["}}])
    with pytest.raises(SettingsError) as caught:
        parse_settings(env)
    assert str(caught.value).startswith("setting ROUTES: route 'ap': match.subject is not a valid regular expression")
    del env["ROUTES"]
    env["ROUTES_FILE"] = str(tmp_path / "missing.json")
    with pytest.raises(SettingsError, match=r"^setting ROUTES_FILE: missing.json cannot be read"):
        parse_settings(env)
    bad = tmp_path / "routes.json"
    bad.write_text(json.dumps([{"name": "ap", "container": "Bad_Name"}]))
    env["ROUTES_FILE"] = str(bad)
    with pytest.raises(SettingsError, match=r"^setting ROUTES_FILE: route 'ap': container 'Bad_Name'"):
        parse_settings(env)


def test_no_route_writes_into_the_state_container(env: dict[str, str]):
    env["ROUTES"] = json.dumps([{"name": "ap", "container": "mail-ingest-state"}])
    with pytest.raises(SettingsError, match=r"^setting ROUTES: route 'ap': container 'mail-ingest-state' is STATE_"):
        parse_settings(env)


def test_routes_file_is_read_from_the_app_root_and_routes_wins(env: dict[str, str], tmp_path: Path):
    assert parse_settings(env).routes == ()
    good = tmp_path / "routes.json"
    good.write_text(json.dumps([{"name": "from-file"}]))
    env["ROUTES_FILE"] = os.path.relpath(good, APP_ROOT)  # relative: found from the app root
    assert [r.name for r in parse_settings(env).routes] == ["from-file"]
    env["ROUTES"] = json.dumps([{"name": "from-setting"}])
    assert [r.name for r in parse_settings(env).routes] == ["from-setting"]


def test_ingested_queue_defaults_on_and_empty_turns_it_off(env: dict[str, str]):
    assert parse_settings(env).ingested_queue == "mail-ingested"
    env["INGESTED_QUEUE"] = ""
    assert parse_settings(env).ingested_queue is None
    env["INGESTED_QUEUE"] = "Captured_Mail"
    with pytest.raises(SettingsError, match=r"^setting INGESTED_QUEUE: 'Captured_Mail' is not a valid queue name"):
        parse_settings(env)


def test_a_route_after_ingest_action_wins_and_asks_for_write_access(env: dict[str, str]):
    env["AFTER_INGEST"] = "mark-read"
    env["GRAPH_AUTH_MODE"] = "delegated"
    env["ROUTES"] = json.dumps([{"name": "spam", "skip": True, "afterIngest": "move:Junk Email"}])
    settings = parse_settings(env)
    folder = settings.mailboxes[0]
    assert settings.after_ingest_for(folder) == AfterIngest(mark_read=True)
    assert settings.after_ingest_for(folder, settings.routes[0].after_ingest) == AfterIngest(move_to="Junk Email")
    assert settings.delegated_scopes == ("Mail.ReadWrite",)
    env["AFTER_INGEST"] = ""
    assert parse_settings(env).delegated_scopes == ("Mail.ReadWrite",)
    env["ROUTES"] = json.dumps([{"name": "spam", "skip": True}])
    assert parse_settings(env).delegated_scopes == ("Mail.Read",)


# -- matching ------------------------------------------------------------------------------------------


def test_sender_wildcards_domain_and_subdomains():
    parsed = routes(
        {"name": "exact", "match": {"from": "ceo@contoso.com"}},
        {"name": "domain", "match": {"from": "*@fabrikam.example"}},
        {"name": "subdomains", "match": {"from": ["*@*.fabrikam.example"]}},
    )
    assert route_of(parsed, mail(sender="CEO@Contoso.COM")) == "exact"
    assert route_of(parsed, mail(sender="other@contoso.com")) == "default"
    assert route_of(parsed, mail(sender="billing@fabrikam.example")) == "domain"
    assert route_of(parsed, mail(sender="billing@eu.fabrikam.example")) == "subdomains"
    assert route_of(parsed, mail(sender="billing@a.b.fabrikam.example")) == "subdomains"
    # A look-alike domain is neither the domain nor a subdomain of it.
    assert route_of(parsed, mail(sender="billing@evilfabrikam.example")) == "default"
    assert route_of(parsed, mail(sender="billing@fabrikam.example.evil.com")) == "default"
    assert route_of(parsed, mail(sender=None)) == "default"
    assert route_of(parsed, mail(sender="not an address")) == "default"


def test_unicode_addresses_match_in_any_form():
    assert normalise_address("Rechnung@XN--MLLER-KVA.de") == normalise_address("rechnung@müller.de")
    # NFD (a + combining diaeresis) and NFC spell the same address.
    assert normalise_address("Jose\u0301@Contoso.com") == normalise_address("jos\u00e9@contoso.com")
    assert normalise_address("no-at-sign") is None
    parsed = routes(
        {"name": "mueller", "match": {"from": "*@müller.de"}},
        {"name": "jose", "match": {"to": "josé@contoso.com"}},
    )
    assert route_of(parsed, mail(sender="buchhaltung@xn--mller-kva.de")) == "mueller"
    assert route_of(parsed, mail(sender="buchhaltung@MÜLLER.de")) == "mueller"
    assert route_of(parsed, mail(sender="x@y.example", recipients=("Jose\u0301@contoso.com",))) == "jose"
    assert route_of(parsed, mail(sender="x@y.example", recipients=("jose@contoso.com",))) == "default"


def test_recipients_mailbox_folder_subject_attachments_and_kept_files():
    parsed = routes(
        {"name": "alias", "match": {"to": ["invoices@contoso.com", "*@ap.contoso.com"]}},
        {"name": "folder", "match": {"mailbox": "AP@contoso.com", "folder": "Inbox / Suppliers"}},
        {"name": "subject", "match": {"subject": "(?i)^(re|fw): .*credit note"}},
        {"name": "xml", "match": {"attachment": ["*.XML", "e-invoice*"]}},
        {"name": "images", "match": {"contentType": "image/*"}},
        {"name": "nothing", "match": {"noKeptFile": True}},
        {"name": "imap", "match": {"mailbox": "scans@mail.example.org"}},
    )
    assert route_of(parsed, mail(recipients=("someone@contoso.com", "Invoices@Contoso.com"))) == "alias"
    assert route_of(parsed, mail(recipients=("x@ap.contoso.com",))) == "alias"
    assert route_of(parsed, mail(folder="Inbox/Suppliers")) == "folder"
    assert route_of(parsed, mail(mailbox="ap@contoso.com", folder="Inbox")) == "default"
    assert route_of(parsed, mail(subject="FW: your Credit Note 12")) == "subject"
    assert route_of(parsed, mail(subject="Credit note 12")) == "default"
    assert route_of(parsed, mail(attachments=(Attachment("Rechnung.xml", "text/xml"),))) == "xml"
    assert route_of(parsed, mail(attachments=(Attachment("e-invoice 7.pdf", None),))) == "xml"
    assert route_of(parsed, mail(attachments=(Attachment("a.png", "IMAGE/PNG; name=a.png"),))) == "images"
    assert route_of(parsed, mail(attachments=(), has_kept_file=False)) == "nothing"
    assert route_of(parsed, mail(mailbox="scans@mail.example.org")) == "imap"


def test_first_match_wins_and_all_conditions_must_hold():
    parsed = routes(
        {"name": "both", "match": {"from": "*@fabrikam.example", "subject": "Invoice"}},
        {"name": "sender", "match": {"from": "*@fabrikam.example"}},
        {"name": "everything"},
        {"name": "never-reached", "match": {"from": "*@fabrikam.example"}},
    )
    assert route_of(parsed, mail(subject="Invoice 1")) == "both"
    assert route_of(parsed, mail(subject="Statement")) == "sender"
    assert route_of(parsed, mail(sender="x@other.example")) == "everything"


def test_allow_list_skips_every_other_sender():
    parsed = routes(
        {"name": "suppliers", "match": {"from": ["*@fabrikam.example", "*@*.fabrikam.example"]}},
        {"name": "not-a-supplier", "skip": True},
    )
    assert not decide(parsed, mail()).skip
    spam = decide(parsed, mail(sender="win@lottery.example"))
    assert spam.skip and spam.route == "not-a-supplier"


# -- decisions and templates ------------------------------------------------------------------------


def test_without_routes_the_layout_and_container_are_todays():
    facts = mail(mailbox="AP@Contoso.com")
    decision = decide((), facts)
    assert decision.prefix == message_prefix("AP@Contoso.com", RECEIVED, "abcdefghijklmnop")
    assert decision.prefix == "ap@contoso.com/2026/03/07/abcdefghijklmnop"
    assert decision.container is None and decision.route == "default" and decision.after_ingest is None
    assert decision.tags == {
        "mailbox": "ap_contoso.com",
        "messageKey": "abcdefghijklmnop",
        "senderDomain": "fabrikam.example",
        "route": "default",
        "senderAuth": "none",  # no receiving server's verdict known
    }


def test_a_route_decides_container_template_tags_and_action():
    parsed = routes(
        {
            "name": "ap-invoices",
            "container": "ap-invoices",
            "path": "{route}/{senderDomain}/{yyyy}-{MM}-{dd}/{messageKey}",
            "tags": {"docType": "invoice", "costCentre": "4711"},
            "afterIngest": "mark-read,category:Captured",
        }
    )
    decision = decide(parsed, mail(sender="Billing@Fabrikam.Example"))
    assert decision.container == "ap-invoices"
    assert decision.prefix == "ap-invoices/fabrikam.example/2026-03-07/abcdefghijklmnop"
    assert decision.tags["docType"] == "invoice" and decision.tags["route"] == "ap-invoices"
    assert len(decision.tags) + 1 <= 10  # `kind` is added per blob
    assert decision.after_ingest == AfterIngest(mark_read=True, category="Captured")


HOSTILE = [
    "../../other-container/x",
    "..",
    "/etc/passwd",
    "a\\b",
    "\x00\x1f\x7f",
    "con",
    " . ",
    "%2e%2e%2f",
    "x" * 500,
    "ü" * 300,
    "",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_stay_inside_the_container(value: str):
    template = Template.parse("{mailbox}/{folder}/{sender}/{senderDomain}/{messageKey}")
    path = template.render(
        {"mailbox": value, "folder": value, "sender": value, "senderDomain": value, "messageKey": "k"}
    )
    segments = path.split("/")
    assert len(segments) == 5 and segments[-1] == "k"
    for segment in segments:
        assert segment and segment not in (".", "..") and sanitize_name(segment, "_") == segment
        assert not any(ord(c) < 32 or c == "\\" for c in segment)
        assert len(segment.encode()) <= 64
    assert len(path) + 1 + 200 <= 1024


def test_hostile_sender_and_folder_through_a_decision():
    parsed = routes({"name": "r", "path": "{folder}/{sender}/{messageKey}"})
    decision = decide(parsed, mail(folder="Inbox/../../x", sender="../..@../evil"))
    first, second, key = decision.prefix.split("/")
    assert ".." not in first and ".." not in second and key == "abcdefghijklmnop"


def test_names_stay_unique_every_mail_has_its_own_folder():
    parsed = routes({"name": "by-sender", "path": "{senderDomain}/{messageKey}"})
    one = decide(parsed, mail(message_key="aaaaaaaaaaaaaaaa"))
    two = decide(parsed, mail(message_key="bbbbbbbbbbbbbbbb"))
    assert one.prefix != two.prefix and one.prefix.rsplit("/", 1)[0] == two.prefix.rsplit("/", 1)[0]
    # Values that differ only in characters the sanitiser replaces still land in folders of their own mail.
    three = decide(parsed, mail(sender="a@x:y", message_key="cccccccccccccccc"))
    four = decide(parsed, mail(sender="a@x_y", message_key="dddddddddddddddd"))
    assert three.prefix.split("/")[0] == four.prefix.split("/")[0] and three.prefix != four.prefix
