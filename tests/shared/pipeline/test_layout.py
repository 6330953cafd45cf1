from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.pipeline.layout import (
    TAG_KEY,
    UniqueNames,
    message_key,
    message_prefix,
    metadata_value,
    parse_graph_time,
    sanitize_name,
    tag_value,
)


def test_message_key_is_short_stable_and_distinct():
    a = message_key("AAMkAGI2TG93AAA=")
    assert a == message_key("AAMkAGI2TG93AAA=")
    assert a != message_key("AAMkAGI2TG93AAB=")
    assert len(a) == 16 and a.isalnum() and a == a.lower()


def test_prefix_uses_utc_date():
    when = parse_graph_time("2026-01-31T23:30:00.1234567-02:00")
    assert message_prefix("Scans@Contoso.com", when, "k") == "scans@contoso.com/2026/02/01/k"


def test_parse_graph_time():
    assert parse_graph_time("2026-11-22T07:36:00Z") == datetime(2026, 11, 22, 7, 36, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("invoice.pdf", "invoice.pdf"),
        ("../../etc/passwd", "_._etc_passwd"),
        ("a/b\\c.pdf", "a_b_c.pdf"),
        ("bad\x00\x1fname\x7f.txt", "bad__name_.txt"),
        ("Rechnung Müller – März.pdf", "Rechnung Müller – März.pdf"),
        ("  .hidden  ", "hidden"),
        ("", "attachment"),
        ("...", "attachment"),
        ("CON.txt", "_CON.txt"),
        ('what?<>:"|*.doc', "what_______.doc"),
    ],
)
def test_sanitize(raw, expected):
    assert sanitize_name(raw) == expected


def test_sanitize_bounds_length_keeps_extension():
    name = sanitize_name("ä" * 300 + ".pdf")
    assert name.endswith(".pdf")
    assert len(name.encode()) <= 200


def test_unique_names_case_insensitive_and_manifest_reserved():
    names = UniqueNames()
    assert [names.take(n) for n in ("scan.pdf", "Scan.pdf", "scan.pdf", "README", "readme")] == [
        "scan.pdf",
        "Scan (2).pdf",
        "scan (3).pdf",
        "README",
        "readme (2)",
    ]
    assert names.take("manifest.json") == "manifest (2).json"


def test_metadata_value_is_ascii():
    value = metadata_value("Müller\nx.pdf")
    assert value.isascii() and "\n" not in value


def test_tag_values_keep_to_the_characters_blob_index_tags_accept():
    assert tag_value("ap@contoso.com") == "ap_contoso.com"
    assert tag_value("Müller GmbH & Co.") == "Muller GmbH _ Co."
    assert tag_value("straße/日本") == "stra_e/__"
    assert tag_value("a+b-c.d/e:f=g_h 1") == "a+b-c.d/e:f=g_h 1"
    assert tag_value("x" * 300) == "x" * 256
    for text in ("ap@contoso.com", "\x00\n€", "ﬁle"):
        assert TAG_KEY.match(tag_value(text) or "x")
