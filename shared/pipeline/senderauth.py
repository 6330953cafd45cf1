"""Did the mail really come from the sender's domain? The receiving server's verdicts (SPF, DKIM, DMARC and
Exchange Online's composite authentication, `compauth`), read from the one `Authentication-Results` field that
the receiving side wrote, never from one the sender could have put in the mail.

Which field counts (a sender can write any header field, but only below those the receiving servers add on top):
- Graph (Exchange Online): the topmost `Authentication-Results` of the message's headers, and only when it has
  Exchange Online's form, without an authserv-id. Exchange Online stamps it on every message it takes in from
  outside, above the `Received:` field of that arrival, so anything the sender wrote is further down. A topmost
  field with an authserv-id is another server's (or a forgery in mail Exchange did not stamp): nothing counts.
- IMAP and POP3: the topmost field whose authserv-id is the account's trusted one (`authserv=` in its URL).
  RFC 8601 §5: the receiving server removes or ignores fields that claim its id, so a lower one is a forgery.
  Without `authserv=` nothing counts.
Every other field is ignored. The verdict (`result`, the `senderAuth` blob index tag): Exchange Online's
`compauth` when present (`pass` and `softpass` pass), else DMARC's; `pass`, `fail`, or `none` for anything
else (no trusted field, neither method, `temperror`, `permerror`, `bestguesspass`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .authresults import MethodResult, parse_authentication_results

FIELD = "authentication-results"
EXCHANGE_ONLINE = "Exchange Online"
RESULTS = ("pass", "fail", "none")
METHODS = ("spf", "dkim", "dmarc", "compauth")
_PASSES = {"compauth": {"pass", "softpass"}, "dmarc": {"pass"}}
_FAILS = {"compauth": {"fail"}, "dmarc": {"fail"}}


@dataclass(frozen=True)
class SenderAuthentication:
    """The manifest's `senderAuthentication`: the verdict, whose field it came from, each method's result."""

    result: str  # pass | fail | none
    by: str | None = None  # EXCHANGE_ONLINE or the authserv-id; None: no field counted
    methods: tuple[MethodResult, ...] = ()
    reason: str | None = None  # why no field counted

    def of(self, method: str) -> str | None:
        """A method's result; with several (two DKIM signatures), `pass` if any passed, else the first."""
        found = [m.result for m in self.methods if m.method == method]
        if not found:
            return None
        return "pass" if "pass" in found else found[0]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"result": self.result, "by": self.by}
        for method in METHODS:
            if (value := self.of(method)) is not None:
                out[method] = value
        compauth = next((m for m in self.methods if m.method == "compauth"), None)
        if compauth is not None and compauth.reason is not None:
            out["compauthReason"] = compauth.reason
        if self.reason is not None:
            out["reason"] = self.reason
        out["methods"] = [m.to_json() for m in self.methods]
        return out


def _verdict(methods: tuple[MethodResult, ...], by: str) -> SenderAuthentication:
    found = SenderAuthentication("none", by, methods)
    for method in ("compauth", "dmarc"):
        value = found.of(method)
        if value is not None:
            result = "pass" if value in _PASSES[method] else "fail" if value in _FAILS[method] else "none"
            return SenderAuthentication(result, by, methods)
    return found


def _fields(headers: Sequence[tuple[str, str]]) -> list[str]:
    """The Authentication-Results fields' values, topmost first."""
    return [value for name, value in headers if name.strip().lower() == FIELD]


def from_exchange_online(headers: Sequence[tuple[str, str]]) -> SenderAuthentication:
    """Graph's mail: `headers` are the message's `internetMessageHeaders`, in the message's order."""
    fields = _fields(headers)
    if not fields:
        return SenderAuthentication("none", reason="no Authentication-Results from Exchange Online")
    top = parse_authentication_results(fields[0])
    if top.authserv_id is not None:
        return SenderAuthentication(
            "none", reason=f"the topmost Authentication-Results is {top.authserv_id!r}'s, not Exchange Online's"
        )
    return _verdict(top.results, EXCHANGE_ONLINE)


def from_receiver(headers: Sequence[tuple[str, str]], authserv_id: str | None) -> SenderAuthentication:
    """IMAP or POP3 mail: the topmost field of the account's trusted authserv-id (None: none is trusted)."""
    if authserv_id is None:
        return SenderAuthentication("none", reason="no trusted authserv-id (authserv= in the account's URL)")
    wanted = authserv_id.lower()
    for value in _fields(headers):
        parsed = parse_authentication_results(value)
        if parsed.authserv_id == wanted:
            return _verdict(parsed.results, wanted)
    return SenderAuthentication("none", reason=f"no Authentication-Results from {wanted}")


# -- the route condition -----------------------------------------------------------------------------


def _words(value: Any, what: str) -> frozenset[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) and i.strip() for i in items):
        raise ValueError(f"{what} must be a text or a list of texts")
    return frozenset(i.strip().lower() for i in items)


def condition(spec: Any) -> Callable[[SenderAuthentication | None], bool]:
    """`match.senderAuthentication`: the verdict (`"fail"`, `["fail", "none"]`), or methods' results, all of
    which must hold (`{"dmarc": "fail"}`, `{"result": "pass", "compauth": ["pass", "softpass"]}`)."""
    what = "match.senderAuthentication"
    wanted: dict[str, frozenset[str]]
    if isinstance(spec, dict):
        unknown = [k for k in spec if k not in ("result", *METHODS)]
        if unknown or not spec:
            first = unknown[0] if unknown else "(none)"
            raise ValueError(f"{what} has an unknown method {first!r} (known: result, {', '.join(METHODS)})")
        wanted = {k: _words(v, f"{what}.{k}") for k, v in spec.items()}
    else:
        wanted = {"result": _words(spec, what)}
    bad = wanted.get("result", frozenset()) - set(RESULTS)
    if bad:
        raise ValueError(f"{what}: result {sorted(bad)[0]!r} is not one of {', '.join(RESULTS)}")

    def holds(found: SenderAuthentication | None) -> bool:
        found = found or SenderAuthentication("none")
        return all((found.result if k == "result" else found.of(k) or "none") in v for k, v in wanted.items())

    return holds
