"""Reading an `Authentication-Results` header field (RFC 8601): who wrote it (the authserv-id) and each
method's result, reason and properties.

Written here rather than taken from a library: `authres` (PyPI), the one parser there is, was last released in
2019 and rejects Exchange Online's field, which has no authserv-id (`spf=pass (sender IP is ...)
smtp.mailfrom=contoso.com; dkim=pass ...; dmarc=pass action=none header.from=contoso.com;compauth=pass
reason=100`) although RFC 8601 requires one. The grammar is small: comments in parentheses (nested, with
backslash escapes) are dropped, quoted strings are kept whole, `;` separates the authserv-id from the
results, and each result is `method[/version]=result` followed by `reason=...` and `ptype.property=value`
pairs. What does not fit (Outlook.com's stray `; hotmail.com;` pieces, a property without a ptype such as
Exchange's `action=none`) is skipped or kept under its own name; nothing here raises on a hostile value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# A field longer than this is cut before reading: receivers write a few hundred bytes.
MAX_FIELD = 16 * 1024
MAX_RESULTS = 50
_HEAD = re.compile(r'^("(?:[^"\\]|\\.)*"|\S+)')
_PAIR = re.compile(r'([A-Za-z0-9_.\-/]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s";]+)')


@dataclass(frozen=True)
class MethodResult:
    """One `method=result` of a field: `dkim=pass header.d=fabrikam.com`."""

    method: str  # lower case, without a version
    result: str  # lower case
    reason: str | None = None
    properties: Mapping[str, str] = field(default_factory=dict)  # `header.d` → `fabrikam.com`

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "result": self.result}
        if self.reason is not None:
            out["reason"] = self.reason
        if self.properties:
            out["properties"] = dict(self.properties)
        return out


@dataclass(frozen=True)
class AuthenticationResults:
    authserv_id: str | None  # None: Exchange Online's form, which has none
    results: tuple[MethodResult, ...]


def _uncomment(text: str) -> str:
    """The field without its comments (each becomes a space); quoted strings are left as they are."""
    out: list[str] = []
    depth, quoted, escaped = 0, False, False
    for ch in text:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(ch)
            continue
        if ch == "\\" and (quoted or depth):
            escaped = True
            if depth == 0:
                out.append(ch)
            continue
        if quoted:
            quoted = ch != '"'
            out.append(ch)
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
            if depth == 0:
                out.append(" ")
        elif depth == 0:
            quoted = ch == '"'
            out.append(ch)
    return "".join(out)


def _split(text: str) -> list[str]:
    """Split on `;` outside quoted strings."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts]


def _value(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def _result(segment: str) -> MethodResult | None:
    pairs = _PAIR.findall(segment)
    if not pairs:
        return None
    method, result = pairs[0]
    method = method.split("/", 1)[0].strip().lower()
    reason: str | None = None
    properties: dict[str, str] = {}
    for name, value in pairs[1:]:
        key = name.lower()
        if key == "reason" and reason is None:
            reason = _value(value)
        elif key not in properties:
            # `ptype.property` keeps the property's case (`smtp.mailfrom`, `header.d`); a bare name as is.
            ptype, dot, prop = name.partition(".")
            properties[f"{ptype.lower()}.{prop}" if dot else key] = _value(value)
    return MethodResult(method, _value(result).lower(), reason, properties)


def parse_authentication_results(value: str) -> AuthenticationResults:
    """One field's value (what follows `Authentication-Results:`, folded or not)."""
    segments = _split(" ".join(_uncomment(value[:MAX_FIELD]).split()))
    first = segments[0]
    authserv_id: str | None = None
    if first and "=" not in first.split('"', 1)[0]:
        # `authserv-id [version]`: the id is the first word (a version after it is not needed here).
        head = _HEAD.match(first)
        authserv_id = _value(head.group(1) if head else first).lower()
        segments = segments[1:]
    results = []
    for segment in segments:
        if segment.lower() == "none":
            continue  # `authserv-id; none`: no method was applied
        found = _result(segment)
        if found is not None:
            results.append(found)
        if len(results) >= MAX_RESULTS:
            break
    return AuthenticationResults(authserv_id, tuple(results))
