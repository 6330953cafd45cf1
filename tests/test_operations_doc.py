"""docs/operations.md and the alert rules match the code: every event they name is logged in shared/,
and every alert rule has a runbook."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.infra.bicep_checks import INFRA
from tests.infra.kql_check import alert_rules as kql_alert_rules

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "operations.md"
_EVENT = re.compile(r"^[a-z]+\.[a-z_]+$")


def _strings(tree: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def logged_events(*, exact: bool = False) -> set[str]:
    """Event names passed to log_event in shared/ and its subpackages: literals, both sides of a conditional,
    f-strings whose placeholders take a value written in the same module, and names bound to event literals of
    the module.
    `exact`: only the names written out in full (the others are over-approximated)."""
    events: set[str] = set()
    for path in sorted((REPO / "shared").rglob("*.py")):  # subpackages too (sources/, pipeline/, ...)
        tree = ast.parse(path.read_text())
        literals = _strings(tree)
        for call in ast.walk(tree):
            if not (
                isinstance(call, ast.Call) and getattr(call.func, "id", None) == "log_event" and len(call.args) > 1
            ):
                continue
            arg = call.args[1]
            options = [arg.body, arg.orelse] if isinstance(arg, ast.IfExp) else [arg]
            for option in options:
                if isinstance(option, ast.Constant) and isinstance(option.value, str):
                    events.add(option.value)
                elif exact:
                    continue
                elif isinstance(option, ast.JoinedStr):
                    # f"subscription.{action}": each literal of the module in the placeholder's place.
                    parts = [p.value if isinstance(p, ast.Constant) else None for p in option.values]
                    if parts.count(None) == 1:
                        at = parts.index(None)
                        before, after = "".join(parts[:at]), "".join(parts[at + 1 :])  # type: ignore[arg-type]
                        events |= {f"{before}{w}{after}" for w in literals if _EVENT.match(f"{before}{w}{after}")}
                elif isinstance(option, ast.Name):
                    events |= {s for s in literals if _EVENT.match(s)}
    return events


def alert_rules() -> list[dict[str, str]]:
    """Every rule, those made only with a setting too (kql_check.alert_rules)."""
    return kql_alert_rules(INFRA)


def _named(rule: dict[str, str]) -> set[str]:
    return set(re.findall(r'"([a-z]+\.[a-z_]+)"', rule["query"]))


def test_logged_events_are_found() -> None:
    # The scanner must keep finding the plain, the conditional, the f-string and the passed-in names.
    assert {"notification.accepted", "ingest.done", "subscription.renewed", "ingest.poisoned"} <= logged_events()
    assert "subscription.bogus" not in logged_events()


def test_every_event_the_alerts_read_is_logged() -> None:
    events = logged_events()
    for rule in alert_rules():
        named = _named(rule)
        assert named <= events, f"alert {rule['name']} reads events nothing logs: {sorted(named - events)}"
        if "customDimensions.mailbox" in rule["query"]:
            assert rule["dimension"] == "mailbox"


def test_every_event_the_doc_names_is_logged() -> None:
    events = logged_events()
    areas = "|".join(sorted({e.split(".")[0] for e in events}))
    named = set(re.findall(rf"(?<![\w.])((?:{areas})\.[a-z_]+)(?![\w.])", DOC.read_text()))
    assert len(named) > 20
    assert named <= events, f"docs/operations.md names events nothing logs: {sorted(named - events)}"


def test_the_doc_documents_every_event_the_alerts_read() -> None:
    table = {m for m in re.findall(r"^\| `([a-z]+\.[a-z_]+)` \|", DOC.read_text(), flags=re.MULTILINE)}
    for rule in alert_rules():
        assert _named(rule) <= table


def test_the_doc_documents_every_event_the_app_logs() -> None:
    table = {m for m in re.findall(r"^\| `([a-z]+\.[a-z_]+)` \|", DOC.read_text(), flags=re.MULTILINE)}
    missing = logged_events(exact=True) - table
    assert not missing, f"docs/operations.md's event table lacks: {sorted(missing)}"


def test_every_alert_has_a_runbook() -> None:
    headings = set(re.findall(r"^### (\S+)$", DOC.read_text(), flags=re.MULTILINE))
    missing = {rule["name"] for rule in alert_rules()} - headings
    assert not missing, f"docs/operations.md has no runbook for: {sorted(missing)}"
