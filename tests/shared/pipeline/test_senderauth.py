"""Sender authentication: Authentication-Results read as RFC 8601 writes them (and as Exchange Online does, without
an authserv-id), and only the receiving side's own field counted; a forged one lower down never is."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.pipeline.authresults import parse_authentication_results
from shared.pipeline.routes import MailFacts, decide, parse_routes
from shared.pipeline.senderauth import EXCHANGE_ONLINE, from_exchange_online, from_receiver

EXO_FAIL = (
    "spf=fail (sender IP is 203.0.113.9) smtp.mailfrom=fabrikam.example; dkim=none (message not signed) "
    "header.d=none;dmarc=fail action=quarantine header.from=fabrikam.example;compauth=fail reason=000"
)
FORGED = (
    "spf=pass smtp.mailfrom=fabrikam.example; dkim=pass header.d=fabrikam.example; dmarc=pass;compauth=pass reason=100"
)


def exchange_headers(top: str, lower: str | None = FORGED) -> list[tuple[str, str]]:
    """As Graph lists them: Exchange's own hops and its Authentication-Results on top, the sender's below."""
    headers = [
        ("Received", "from AM0PR.eurprd.prod.outlook.com (2603:10a6::1) by DB9PR.eurprd.prod.outlook.com with HTTPS"),
        ("Authentication-Results", top),
        ("Received-SPF", "Fail (protection.outlook.com: domain of fabrikam.example does not designate 203.0.113.9)"),
        ("Received", "from mail.fabrikam.example (203.0.113.9) by AM0PEPF.mail.protection.outlook.com"),
    ]
    if lower is not None:
        headers.append(("Authentication-Results", lower))
    return [*headers, ("From", "billing@fabrikam.example"), ("Subject", "Invoice 88")]


def test_exchange_onlines_field_is_read_though_it_has_no_authserv_id():
    parsed = parse_authentication_results(EXO_FAIL)
    assert parsed.authserv_id is None
    assert [(m.method, m.result) for m in parsed.results] == [
        ("spf", "fail"), ("dkim", "none"), ("dmarc", "fail"), ("compauth", "fail"),
    ]  # fmt: skip
    assert parsed.results[0].properties == {"smtp.mailfrom": "fabrikam.example"}
    assert parsed.results[2].properties == {"action": "quarantine", "header.from": "fabrikam.example"}
    assert parsed.results[3].reason == "000"


def test_rfc_8601_fields_comments_quotes_versions_and_none():
    parsed = parse_authentication_results(
        'mx.example.org 1; dkim/1=PASS (good (nested) sig) reason="ok; \\"fine\\"" header.d=a.example '
        "header.s=s1; dmarc=fail (p=reject) header.from=a.example"
    )
    assert parsed.authserv_id == "mx.example.org"
    assert parsed.results[0].method == "dkim" and parsed.results[0].result == "pass"
    assert parsed.results[0].reason == 'ok; "fine"'
    assert parsed.results[0].properties == {"header.d": "a.example", "header.s": "s1"}
    assert parse_authentication_results("mx.example.org; none").results == ()
    # Outlook.com's stray pieces are skipped, not taken for results.
    stray = parse_authentication_results("spf=none smtp.mailfrom=x.net; hotmail.com; dkim=none header.d=x.net")
    assert [m.method for m in stray.results] == ["spf", "dkim"]


def test_exchange_online_topmost_field_counts_and_a_forged_lower_one_does_not():
    found = from_exchange_online(exchange_headers(EXO_FAIL))
    assert (found.result, found.by) == ("fail", EXCHANGE_ONLINE)
    recorded = found.to_json()
    assert recorded["dmarc"] == "fail" and recorded["spf"] == "fail"
    assert recorded["compauth"] == "fail" and recorded["compauthReason"] == "000"


def test_a_topmost_field_with_an_authserv_id_is_not_exchange_onlines():
    found = from_exchange_online(exchange_headers("mx.fabrikam.example; dmarc=pass", lower=None))
    assert found.result == "none" and found.by is None and "not Exchange Online's" in str(found.reason)
    assert from_exchange_online([("From", "a@b.example")]).result == "none"


@pytest.mark.parametrize(
    ("compauth", "dmarc", "expected"),
    [("pass", "fail", "pass"), ("softpass", "none", "pass"), ("none", "pass", "none"), (None, "pass", "pass"),
     (None, "fail", "fail"), (None, "temperror", "none"), (None, None, "none")],
)  # fmt: skip
def test_the_verdict_is_compauth_else_dmarc(compauth: str | None, dmarc: str | None, expected: str):
    parts = ["spf=pass smtp.mailfrom=a.example"]
    parts += [f"dmarc={dmarc} header.from=a.example"] if dmarc else []
    parts += [f"compauth={compauth} reason=100"] if compauth else []
    assert from_exchange_online([("Authentication-Results", "; ".join(parts))]).result == expected


def test_an_account_trusts_only_the_topmost_field_of_its_authserv_id():
    headers = [
        ("Received", "from mail.fabrikam.example by mx.example.org"),
        ("Authentication-Results", "mx.example.org; spf=fail smtp.mailfrom=fabrikam.example; dmarc=fail"),
        ("Authentication-Results", "mx.example.org; dmarc=pass"),  # the sender's, claiming the receiver's id
        ("Authentication-Results", "other.example; dmarc=pass"),
    ]
    assert from_receiver(headers, "mx.example.org").result == "fail"
    assert from_receiver(headers, "MX.example.org".lower()).by == "mx.example.org"
    untrusted = from_receiver(headers, "elsewhere.example")
    assert untrusted.result == "none" and "no Authentication-Results from elsewhere.example" in str(untrusted.reason)
    assert from_receiver(headers, None).result == "none"  # no authserv=: nothing is trusted


def test_a_route_sends_dmarc_failures_to_review_and_the_tag_says_the_verdict():
    routes = parse_routes(
        '[{"name": "review", "match": {"senderAuthentication": {"dmarc": "fail"}}, "container": "ap-review"},'
        ' {"name": "doubtful", "match": {"senderAuthentication": ["fail", "none"]}, "container": "ap-doubtful"}]'
    )
    facts = MailFacts("ap@contoso.com", "Inbox", "k" * 16, datetime(2026, 3, 7, tzinfo=UTC), "billing@fabrikam.example")
    failed = decide(
        routes, MailFacts(**{**facts.__dict__, "authentication": from_exchange_online(exchange_headers(EXO_FAIL))})
    )
    assert (failed.route, failed.container, failed.tags["senderAuth"]) == ("review", "ap-review", "fail")
    unknown = decide(routes, facts)  # no verdict at all: `none`
    assert (unknown.route, unknown.tags["senderAuth"]) == ("doubtful", "none")
    passed = from_exchange_online([("Authentication-Results", "dmarc=pass;compauth=pass reason=100")])
    assert decide(routes, MailFacts(**{**facts.__dict__, "authentication": passed})).route == "default"
