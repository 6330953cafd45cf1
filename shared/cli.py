"""Operator commands: `python -m shared.cli check | maintain | status | resync | replay-poison | unsubscribe`.

Settings are read as the app reads them, from the environment; a local.settings.json (`--settings
FILE`, else ./local.settings.json when there is one) adds its `Values` without overriding the
environment. Against a deployment, `--app NAME --resource-group GROUP` reads the Function App's own settings
through Azure Resource Manager instead, Key Vault references resolved (ops/deployment.py); they win over the
environment's, and no local.settings.json is read. They are the app's settings only, never put into this process's
environment: Key Vault (and Storage, when it is configured by service URI) are reached through
DefaultAzureCredential, so on an operator's machine `az login` is the sign-in, not the app's identity.

Exit codes: 0 done, 1 failed (a check failed, a replay failed, Azure refused), 2 usage (unknown
mailbox or folder, bad arguments). An expected failure prints one line, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from .delivery import DEFAULT_EVENTGRID_QUEUE
from .errors import IngestError, SettingsError, StateConflict, one_line
from .logs import redact_url
from .ops.activity import ActivityStore
from .ops.checks import CheckResult, Checks
from .ops.deployment import PUBLIC_CLOUD, Deployment, deployment_settings
from .ops.health import collect_status, to_json
from .ops.webhook_guard import refuse_foreign_webhook
from .pipeline.layout import graph_time, message_key
from .pipeline.malware.options import DEFAULT_QUEUE as DEFAULT_SCAN_QUEUE
from .pipeline.poison import (
    CHANGES_QUEUE,
    FETCH_QUEUE,
    LIFECYCLE_QUEUE,
    POLL_QUEUE,
    Parked,
    peek_parked,
    poison_queue,
    replay_parked,
)
from .runtime import Runtime, build_runtime
from .settings import MailAccount, MailboxFolder, Settings, parse_settings
from .sources.cursor import CursorStore
from .sources.graph.maintain import IDLE, failed_folders, run_pass
from .sources.graph.resync import resync_folder
from .sources.graph.state import FolderState, StateStore
from .sources.graph.subscriptions import delete_subscription

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
LOCAL_SETTINGS = "local.settings.json"
# Every queue a trigger reads, whose poison queue a failed message can end in.
QUEUES = {
    "changes": CHANGES_QUEUE,
    "lifecycle": LIFECYCLE_QUEUE,
    "poll": POLL_QUEUE,
    "fetch": FETCH_QUEUE,
    "events": DEFAULT_EVENTGRID_QUEUE,  # EVENTGRID_QUEUE when set: Graph's events through Event Grid
    "scans": DEFAULT_SCAN_QUEUE,  # MALWARE_SCAN_QUEUE when set: Defender's scan results
}
TIMER_NOTE = (
    "note: the maintain timer creates subscriptions again for folders still in MAILBOXES; "
    "take a folder out of MAILBOXES to stop ingesting it for good"
)


class UsageError(IngestError):
    """The command names something that is not there (a mailbox, a folder); exit 2."""


# -- arguments ---------------------------------------------------------------------------------


def parse_since(text: str) -> datetime:
    """An ISO date (`2026-11-20`, midnight UTC) or date and time (`2026-11-20T08:30`, UTC unless a
    zone is given, e.g. `+01:00` or `Z`)."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or date and time: {text!r}") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def parse_target(text: str) -> tuple[str, str | None]:
    """`MAILBOX` or `MAILBOX/FOLDER/SUB FOLDER` (the first `/` splits, as in MAILBOXES)."""
    mailbox, _, folder = text.partition("/")
    mailbox = mailbox.strip().lower()
    if not mailbox:
        raise argparse.ArgumentTypeError(f"not MAILBOX or MAILBOX/FOLDER: {text!r}")
    path = "/".join(s.strip() for s in folder.split("/")) if folder.strip() else None
    return mailbox, path


def names(target: tuple[str, str | None], mailbox: str, folder: str) -> bool:
    """Whether a parsed `MAILBOX[/FOLDER]` target names this mailbox (as given) and folder (any case)."""
    wanted, path = target
    return mailbox == wanted and (path is None or folder.lower() == path.lower())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shared.cli", description="Operate Mail Attachment Ingest.")
    parser.add_argument(
        "--settings", type=Path, help=f"a {LOCAL_SETTINGS} whose Values fill in what the environment lacks"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="also print the app's own log events")
    deployed = parser.add_argument_group("a deployment (its settings read through Azure Resource Manager)")
    deployed.add_argument("--app", metavar="NAME", help="the Function App (azd: AZURE_FUNCTION_APP_NAME)")
    deployed.add_argument("--resource-group", metavar="GROUP", help="its resource group (azd: AZURE_RESOURCE_GROUP)")
    deployed.add_argument(
        "--subscription", metavar="ID", help="its subscription id; default AZURE_SUBSCRIPTION_ID (azd sets it)"
    )
    deployed.add_argument("--management-url", default=PUBLIC_CLOUD, metavar="URL", help="Azure Resource Manager")
    deployed.add_argument("--management-scope", metavar="SCOPE", help="its token scope; default URL + /.default")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("check", help="try token, mailbox folders, webhook, storage and Key Vault; exit 1 on a failure")
    commands.add_parser(
        "maintain", help="run one maintain pass now (create, renew, resync as due); exit 1 if a folder failed"
    )
    status = commands.add_parser("status", help="per mailbox folder: subscription, notifications, ingest, errors")
    status.add_argument("--json", action="store_true", help="the report as JSON (as GET /api/health returns it)")
    resync = commands.add_parser(
        "resync",
        help="enqueue a folder's mail again (delta since the saved link, or --since); an IMAP or POP3 account's "
        "next poll lists its mail again (since --since), queueing what was missed",
    )
    resync.add_argument("target", type=parse_target, metavar="MAILBOX[/FOLDER]")
    resync.add_argument("--since", type=parse_since, metavar="DATE", help="ISO date or date-time, UTC unless zoned")
    replay = commands.add_parser("replay-poison", help="move parked messages back onto their queue")
    replay.add_argument("--queue", choices=sorted(QUEUES), default="changes")
    replay.add_argument("--dry-run", action="store_true", help="list them, move nothing")
    unsubscribe = commands.add_parser(
        "unsubscribe",
        help="delete subscriptions at Graph and their state records; forget IMAP and POP3 accounts no longer in "
        "MAILBOXES (an account still in MAILBOXES is left as it is)",
    )
    which = unsubscribe.add_mutually_exclusive_group(required=True)
    which.add_argument("target", nargs="?", type=parse_target, metavar="MAILBOX[/FOLDER]")
    which.add_argument("--all", action="store_true", help="every folder with a state record, every account")
    return parser


def load_local_settings(path: Path, environ: MutableMapping[str, str]) -> int:
    """Add the file's `Values` to `environ` where it has no value yet; how many were added."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot be read as JSON: {one_line(exc)}") from None
    values = data.get("Values") if isinstance(data, dict) else None
    if not isinstance(values, dict):
        raise UsageError(f"{path}: has no Values object")
    added = 0
    for name, value in values.items():
        if name not in environ and value is not None:
            environ[name] = str(value)
            added += 1
    return added


def _mark(ok: bool) -> str:
    """✓/✗ where the terminal can show them, else OK/FAIL."""
    marks = ("✓", "✗")
    try:
        "".join(marks).encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "OK  " if ok else "FAIL"
    return marks[0] if ok else marks[1]


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    value, sign = abs(int(seconds)), "-" if seconds < 0 else ""
    days, rest = divmod(value, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d {hours}h"
    if hours:
        return f"{sign}{hours}h {minutes}m"
    if minutes:
        return f"{sign}{minutes}m {secs}s"
    return f"{sign}{secs}s"


def _lag(seconds: float | None) -> str:
    if seconds is not None and abs(seconds) < 60:
        return f"{seconds:.1f}s"  # the usual case: worth its tenths
    return _age(seconds)


# -- folder selection --------------------------------------------------------------------------


def configured_folders(settings: Settings, target: tuple[str, str | None]) -> list[MailboxFolder]:
    mailbox, folder = target
    mine = [f for f in settings.mailboxes if f.mailbox == mailbox]
    if not mine:
        known = ", ".join(sorted({f.mailbox for f in settings.mailboxes}))
        raise UsageError(f"mailbox {mailbox} is not in MAILBOXES (configured: {known})")
    if folder is not None:
        mine = [f for f in mine if f.folder.lower() == folder.lower()]
        if not mine:
            folders = ", ".join(f.folder for f in settings.mailboxes if f.mailbox == mailbox)
            raise UsageError(f"folder {folder!r} of {mailbox} is not in MAILBOXES (configured: {folders})")
    return mine


async def _records(rt: Runtime) -> dict[str, FolderState]:
    store = StateStore(rt.state)
    keys = await store.folder_keys()
    loaded = await asyncio.gather(*(store.load(key) for key in keys))
    return {key: state for key, (state, _) in zip(keys, loaded, strict=True) if state is not None}


# -- commands ----------------------------------------------------------------------------------


def print_checks(results: list[CheckResult]) -> None:
    for result in results:
        detail = f": {result.detail}" if result.detail else ""
        print(f"{_mark(result.ok)} {result.name}{detail}")
        if not result.ok and result.hint:
            print(f"    fix: {result.hint}")


async def cmd_check(rt: Runtime, args: argparse.Namespace) -> int:
    counts = f"{len(rt.settings.mailboxes)} mailbox folder(s), {len(rt.settings.accounts)} account(s)"
    results = [CheckResult("settings", True, counts)]
    results += await Checks(rt, args.management_url, args.management_scope).all()
    print_checks(results)
    failed = [r for r in results if not r.ok]
    print(f"{len(results) - len(failed)} of {len(results)} checks passed")
    return EXIT_FAILED if failed else EXIT_OK


def render_pass(report: dict[str, str]) -> list[str]:
    """One line per folder: what the pass did, or why it failed."""
    return [f"{_mark(not result.startswith('failed'))} {name}: {result}" for name, result in report.items()]


async def cmd_maintain(rt: Runtime, args: argparse.Namespace) -> int:
    await refuse_foreign_webhook(rt, settings_from_app=args.app is not None)
    report = await run_pass(rt)
    # The pass recorded each account's start if it had none: from when its polls take mail.
    for account in rt.settings.accounts:
        cursor, _ = await CursorStore(rt.state).load(account.key)
        if cursor is not None:
            print(f"{_mark(True)} {account}: polled for mail from {cursor.window_start} on")
    if not rt.settings.uses_graph:
        print(IDLE)
        return EXIT_OK
    for line in render_pass(report):
        print(line)
    failed = failed_folders(report)
    print(f"{len(report) - len(failed)} of {len(report)} mailbox folders done, {len(failed)} failed")
    return EXIT_FAILED if failed else EXIT_OK


def render_status(report: dict[str, Any]) -> str:
    lines = []
    for f in report["folders"]:
        state = "healthy" if f["healthy"] else "UNHEALTHY"
        if not f["configured"]:
            state = "not configured"
        lines.append(f"{_mark(f['healthy'])} {f['mailbox']}/{f['folder']}  {state}")
        sub, notification, ingest, resync = f["subscription"], f["notification"], f["ingest"], f["resync"]
        if sub["id"]:
            lines.append(
                f"    subscription  {sub['id']}, expires {sub['expiration']} (in {_age(sub['expires_in_seconds'])}),"
                f" renewed {sub['renewed_at'] or '-'}"
            )
        else:
            lines.append("    subscription  none")
        if notification["last_at"]:
            lines.append(
                f"    notification  last {notification['last_at']} ({_age(notification['seconds_since'])} ago)"
            )
        else:
            lines.append("    notification  none recorded")
        if ingest["last_at"]:
            lag = ingest["lag_seconds"]
            lines.append(
                f"    ingest        last {ingest['last_at']}: message {ingest['last_message_key']},"
                f" {ingest['last_files']} file(s), lag {_lag(lag)}"
                f" (received {ingest['last_received_at']})"
                + (f", route {ingest['last_route']}" if ingest.get("last_route") else "")
            )
        else:
            lines.append("    ingest        none recorded")
        if ingest.get("last_skipped_at"):
            lines.append(
                f"    skipped       last {ingest['last_skipped_at']}: message {ingest['last_skipped_message_key']},"
                f" route {ingest['last_skipped_route']}"
            )
        link = "delta link saved" if resync["delta_link"] else "no delta link"
        lines.append(f"    resync        last {resync['last_at'] or '-'}, {link}")
        if sub["last_lifecycle_event"]:
            lines.append(f"    lifecycle     {sub['last_lifecycle_event']} at {sub['last_lifecycle_at']}")
        auth = f["auth"]
        if auth is not None:
            lines.append(
                f"    sign-in       {auth.get('status')}"
                + (f": {auth.get('reason')}" if auth.get("reason") else "")
                + (f", refreshed {auth.get('refreshed_at')}" if auth.get("refreshed_at") else "")
            )
            if auth.get("status") != "ok" and auth.get("consent_url"):
                lines.append(f"    consent at    {auth['consent_url']}")
        for problem in f["problems"]:
            lines.append(f"    problem       {problem}")
        if f.get("note"):
            lines.append(f"    note          {f['note']}")
    lines += _render_accounts(report.get("accounts", []))
    last = report.get("maintain")
    if last and last.get("idle"):
        lines.append(f"maintain: last pass {last.get('at')}, idle: {last['idle']}")
    elif last:
        lines.append(f"maintain: last pass {last.get('at')}, {last.get('failed', 0)} folder(s) failed")
    routes = report.get("routes")
    if routes:
        state = f"latest version not used: {routes['problem']}" if routes["problem"] else "in use"
        lines.append(f"routes: {routes['blob']} {state}")
    queues = ", ".join(f"{name} {count}" for name, count in report["queues"].items())
    lines.append(f"queues: {queues}")
    grid = report.get("eventgrid")
    if grid:
        lines.append(
            f"event grid: partner topic {grid['partnerTopic']} → queue {grid['queue']}; "
            f"dead letters in {grid['deadLetterContainer']}: {grid['deadLettered']}"
        )
    scan = report.get("malware")
    if scan:
        oldest = f", oldest {scan['oldestAwaitingSeconds']} s" if scan["awaiting"] else ""
        lines.append(
            f"malware verdicts: queue {scan['queue']}; {scan['awaiting']} mail(s) awaiting{oldest}, "
            f"{scan['overdue']} past {scan['timeoutMinutes']:g} min; quarantine {scan['quarantineContainer']}"
        )
    lines.append(f"clientState: {report['client_state']}")
    lines.append("healthy" if report["healthy"] else f"unhealthy: {', '.join(report['unhealthy'])}")
    return "\n".join(lines)


def _render_accounts(accounts: list[dict[str, Any]]) -> list[str]:
    """IMAP and POP3 accounts: the cursor, the last poll, what was queued and ingested, the problems."""
    lines = []
    for a in accounts:
        lines.append(f"{_mark(a['healthy'])} {a['account']}  {'healthy' if a['healthy'] else 'UNHEALTHY'}")
        cursor = a.get("cursor")
        if cursor is None:
            lines.append(f"    poll          {a.get('note', 'not polled yet')}")
        else:
            where = ", ".join(f"{k} {v}" for k, v in cursor.items())
            lines.append(f"    poll          last {a['last_poll_at'] or '-'}, {where}, {a['queued']} queued in all")
        ingest = a.get("ingest") or {}
        if ingest.get("last_at"):
            lines.append(
                f"    ingest        last {ingest['last_at']}: message {ingest['last_message_key']},"
                f" {ingest['last_files']} file(s), route {ingest['last_route']}"
            )
        else:
            lines.append("    ingest        none recorded")
        if ingest.get("last_error"):
            lines.append(f"    ingest error  {ingest['last_error_at']}: {ingest['last_error']}")
        lines += [f"    problem       {problem}" for problem in a["problems"]]
    return lines


async def cmd_status(rt: Runtime, args: argparse.Namespace) -> int:
    report = await collect_status(rt)
    print(to_json(report) if args.json else render_status(report))
    return EXIT_OK


async def cmd_resync(rt: Runtime, args: argparse.Namespace) -> int:
    since: datetime | None = args.since
    mailbox = args.target[0]
    accounts = [a for a in rt.settings.accounts if names(args.target, a.address, a.folder)]
    for account in accounts:
        cursor = await CursorStore(rt.state).rewind(account.key, graph_time(since) if since else None)
        if cursor is None:
            print(f"{account}: not started yet; its first poll takes mail from its start (or BACKFILL_HOURS back)")
        else:
            print(f"{account}: the next poll lists its mail since {cursor.window_start} again, by fingerprint")
    if accounts and not any(f.mailbox == mailbox for f in rt.settings.mailboxes):
        return EXIT_OK
    for folder in configured_folders(rt.settings, args.target):
        outcome = await resync_folder(rt, folder, "operator resync", since=since)
        if since is not None:
            how = f"received since {graph_time(since)}"
        else:
            how = "full window (no usable delta link)" if outcome.full else "since the saved delta link"
        print(f"{folder}: {outcome.enqueued} message(s) enqueued, {how}")
    return EXIT_OK


def describe(settings: Settings, parked: Parked) -> str:
    """Which folder and mail a parked message is about, and why it was parked."""
    about = parked.id
    try:
        data = json.loads(parked.original)
    except ValueError:
        data = None
    if isinstance(data, dict):
        folder = settings.folder_by_key(str(data.get("folder_key", "")))
        where = str(folder) if folder else f"folder {data.get('folder_key')}"
        account = settings.account_by_key(str(data.get("account", "")))
        if data.get("type") in ("fetch", "poll"):
            where = str(account) if account else f"account {data.get('account')}"
            about = f"{where} message {data.get('fingerprint')}" if data["type"] == "fetch" else f"{where} poll"
        elif data.get("message_id"):
            about = f"{where} message {message_key(str(data['message_id']))}"
        elif data.get("event"):
            about = f"{where} lifecycle {data['event']}"
        elif isinstance(data.get("data"), dict) and data["data"].get("blobUri"):
            about = f"scan result for {redact_url(str(data['data']['blobUri']))}"
    reason = parked.reason or "no reason recorded (moved by the host)"
    return f"{about} (parked {parked.failed_at or '-'}): {reason}"


async def cmd_replay(rt: Runtime, args: argparse.Namespace) -> int:
    eventgrid = rt.settings.eventgrid
    queue = eventgrid.queue if args.queue == "events" and eventgrid is not None else QUEUES[args.queue]
    queue = rt.settings.malware.queue if args.queue == "scans" else queue
    if args.dry_run:
        parked, count = await peek_parked(rt, queue)
        for item in parked:
            print(f"parked: {describe(rt.settings, item)}")
        more = f" ({count - len(parked)} more not shown)" if count > len(parked) else ""
        print(f"{count} message(s) in {poison_queue(queue)}{more}; dry run, nothing moved")
        return EXIT_OK
    report = await replay_parked(rt, queue)
    for item in report.replayed:
        print(f"replayed: {describe(rt.settings, item)}")
    for item, reason in report.failed:
        print(f"{_mark(False)} not replayed, still parked: {describe(rt.settings, item)}: {reason}")
    print(f"{len(report.replayed)} message(s) moved back onto {queue}, {len(report.failed)} failed")
    return EXIT_FAILED if report.failed else EXIT_OK


async def _unsubscribe_accounts(rt: Runtime, target: tuple[str, str | None] | None) -> tuple[bool, int]:
    """IMAP and POP3 accounts (all when `target` is None): they have no subscription, their polls follow
    MAILBOXES. One still configured is left as it is: forgetting its cursor would make its next poll start
    from now and skip what came in meanwhile. One no longer configured is forgotten (cursor, seen marks,
    activity record). Whether the target named any account, and how many could not be forgotten."""

    def named(account: MailAccount | None) -> bool:
        return target is None or (account is not None and names(target, account.address, account.folder))

    configured = [a for a in rt.settings.accounts if named(a)]
    for account in configured:
        print(
            f"{account}: still in MAILBOXES, nothing changed (an account has no subscription, its polls follow "
            "MAILBOXES): remove it from MAILBOXES first; forgetting the cursor of a polled account would restart "
            "it from now"
        )
    store, keys = CursorStore(rt.state), {a.key for a in rt.settings.accounts}
    forgotten, failed = 0, 0
    for cursor, etag in await store.cursors():
        if cursor.account_key in keys or not named(cursor.recorded_account()):
            continue
        try:
            marks = await store.forget(cursor.account_key, etag)
        except StateConflict:
            failed += 1
            print(f"{_mark(False)} {cursor.account}: its cursor changed meanwhile; run again")
            continue
        await ActivityStore(rt.state).remove(cursor.account_key)
        forgotten += 1
        print(f"{cursor.account}: not in MAILBOXES, forgotten: cursor, {marks} seen mark(s), activity record removed")
    return bool(configured or forgotten or failed), failed


async def cmd_unsubscribe(rt: Runtime, args: argparse.Namespace) -> int:
    accounts, failed = await _unsubscribe_accounts(rt, None if args.all else args.target)
    records = await _records(rt)
    if args.all:
        keys = sorted(records, key=lambda k: (records[k].mailbox, records[k].folder))
    else:
        mailbox, folder = args.target
        keys = [k for k, s in records.items() if names(args.target, s.mailbox.lower(), s.folder)]
        if not keys:
            if accounts:
                return EXIT_FAILED if failed else EXIT_OK
            # Named but without a record: a usage error if it is not configured either.
            configured_folders(rt.settings, args.target)
            print(f"{mailbox}{'/' + folder if folder else ''}: no state record, no subscription known")
            return EXIT_OK
    store = StateStore(rt.state)
    for key in keys:
        state, etag = await store.load(key)
        if state is None:
            continue  # removed meanwhile (the timer retired it)
        deleted = "deleted"
        if state.subscription_id and not rt.settings.app_configured:
            # Only accounts left in MAILBOXES and no app registration set: Graph cannot be asked; it lapses.
            deleted = f"not deleted at Graph (no GRAPH_* settings; it lapses at {state.expiration or 'its expiry'})"
        elif state.subscription_id:
            await delete_subscription(rt, state.subscription_id, state.mailbox)
        try:
            await store.remove(key, etag)
        except StateConflict:
            failed += 1
            print(f"{_mark(False)} {state.mailbox}/{state.folder}: its record changed meanwhile; run again")
            continue
        print(
            f"{state.mailbox}/{state.folder}: subscription {state.subscription_id or '(none)'} {deleted}, "
            "record removed"
        )
    if not keys and not accounts:
        print("no state records")
    if rt.settings.uses_graph:
        print(TIMER_NOTE)
    return EXIT_FAILED if failed else EXIT_OK


Command = Callable[[Runtime, argparse.Namespace], Awaitable[int]]
COMMANDS: dict[str, Command] = {
    "check": cmd_check,
    "maintain": cmd_maintain,
    "status": cmd_status,
    "resync": cmd_resync,
    "replay-poison": cmd_replay,
    "unsubscribe": cmd_unsubscribe,
}


async def run(settings: Settings, args: argparse.Namespace) -> int:
    rt = build_runtime(settings)
    try:
        return await COMMANDS[args.command](rt, args)
    finally:
        await rt.aclose()


def deployment_of(args: argparse.Namespace, environ: Mapping[str, str]) -> Deployment:
    subscription = args.subscription or environ.get("AZURE_SUBSCRIPTION_ID", "").strip()
    if not args.resource_group or not subscription:
        raise UsageError("--app needs --resource-group and --subscription (or AZURE_SUBSCRIPTION_ID)")
    if args.settings:
        raise UsageError("--app reads the deployment's settings; --settings does not apply")
    return Deployment(subscription, args.resource_group, args.app, args.management_url, args.management_scope)


async def read_deployment(deployment: Deployment) -> dict[str, str]:
    from azure.identity.aio import DefaultAzureCredential

    async with DefaultAzureCredential() as credential:
        return await deployment_settings(deployment, credential)


def load_settings(args: argparse.Namespace, environ: MutableMapping[str, str]) -> Settings:
    """This machine's settings (environment, local.settings.json), or with --app the deployment's over them. This
    machine's storage connection never mixes with the deployment's: it would win over the app's service URIs."""
    if args.app:
        app = asyncio.run(read_deployment(deployment_of(args, environ)))
        local = {k: v for k, v in environ.items() if not k.startswith("AzureWebJobsStorage")}
        return parse_settings({**local, **app})
    path = args.settings or (Path(LOCAL_SETTINGS) if Path(LOCAL_SETTINGS).is_file() else None)
    if path is not None:
        load_local_settings(path, environ)
    return parse_settings(environ)


def main(argv: list[str] | None = None, environ: MutableMapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    environ = os.environ if environ is None else environ
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        try:
            settings = load_settings(args, environ)
        except SettingsError as exc:
            if args.command != "check":
                raise
            where = (
                "on the Function App (docs/setup.md)" if args.app else "in the environment or in local.settings.json"
            )
            print_checks([CheckResult("settings", False, str(exc), f"set it {where}")])
            return EXIT_FAILED
        return asyncio.run(run(settings, args))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except IngestError as exc:  # the app's own errors name what failed
        print(f"error: {str(exc).splitlines()[0] if str(exc) else one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except (httpx.HTTPError, OSError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        from azure.core.exceptions import AzureError

        if not isinstance(exc, AzureError):
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
