"""App settings and host.json, read the way the Functions host reads them."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

JOB_HOST_PREFIX = "AzureFunctionsJobHost__"


class ConfigError(Exception):
    """A start-up problem; its message is printed as one line and the dev host exits."""


def load_local_settings(app_dir: Path, environ: MutableMapping[str, str]) -> list[str]:
    """Copy ``local.settings.json`` ``Values`` into ``environ``; returns the names it set.

    Variables already in the environment win, as with Core Tools. A missing file is fine.
    """
    path = app_dir / "local.settings.json"
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    values = data.get("Values") if isinstance(data, dict) else None
    if values is None:
        return []
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: 'Values' must be an object")
    applied = []
    for name, value in values.items():
        if name in environ:
            continue
        # Core Tools passes every value as a string; JSON numbers and booleans become their text.
        environ[name] = value if isinstance(value, str) else json.dumps(value)
        applied.append(name)
    return applied


def _set_path(target: dict[str, Any], path: list[str], value: str) -> None:
    # Keys match case-insensitively, like .NET configuration; an existing key keeps its spelling.
    node = target
    for part in path[:-1]:
        key = next((k for k in node if k.lower() == part.lower()), part)
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    last = next((k for k in node if k.lower() == path[-1].lower()), path[-1])
    node[last] = value


def load_host_json(app_dir: Path, environ: Mapping[str, str]) -> dict[str, Any]:
    """host.json with ``AzureFunctionsJobHost__a__b`` environment overrides applied.

    ``__`` separates nesting levels; the override values stay strings, as in .NET configuration,
    and the typed accessors below convert them.
    """
    path = app_dir / "host.json"
    config: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8-sig"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: must be a JSON object")
        config = loaded
    for name, value in sorted(environ.items()):
        if name.lower().startswith(JOB_HOST_PREFIX.lower()) and len(name) > len(JOB_HOST_PREFIX):
            parts = [p for p in name[len(JOB_HOST_PREFIX) :].split("__") if p]
            if parts:
                _set_path(config, parts, value)
    return config


def get_path(config: Mapping[str, Any], *path: str) -> Any:
    """Case-insensitive lookup of a nested key; None when absent."""
    node: Any = config
    for part in path:
        if not isinstance(node, Mapping):
            return None
        node = next((v for k, v in node.items() if k.lower() == part.lower()), None)
    return node


_TIMESPAN = re.compile(r"^\s*(-)?(?:(\d+)\.)?(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,7}))?)?\s*$")


def parse_timespan(value: Any, *, what: str) -> timedelta:
    """A .NET TimeSpan as host.json writes it: ``"[d.]hh:mm[:ss[.fffffff]]"``, or a JSON number.

    A JSON number is taken as milliseconds (the Functions 1.x host.json convention that the brief
    and many samples still use); a bare digit string is whole days, as ``TimeSpan.Parse`` reads it.
    """
    if isinstance(value, bool):
        raise ConfigError(f"host.json {what}: not a time span: {value!r}")
    if isinstance(value, int | float):
        return timedelta(milliseconds=value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return timedelta(days=int(text))
        match = _TIMESPAN.match(text)
        if match:
            sign, days, hours, minutes, seconds, fraction = match.groups()
            span = timedelta(
                days=int(days or 0),
                hours=int(hours),
                minutes=int(minutes),
                seconds=int(seconds or 0),
                microseconds=int((fraction or "0").ljust(7, "0")) / 10,
            )
            return -span if sign else span
    raise ConfigError(f"host.json {what}: not a time span: {value!r}")


def _int(value: Any, *, what: str, minimum: int, maximum: int | None = None) -> int:
    try:
        number = int(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or number < minimum or (maximum is not None and number > maximum):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ConfigError(f"host.json {what}: must be an integer {bounds}, got {value!r}")
    return number


@dataclass(frozen=True)
class QueueOptions:
    """``extensions.queues`` with the defaults of the Storage Queues extension 5.x (QueuesOptions)."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_polling_interval: timedelta = timedelta(minutes=1)
    visibility_timeout: timedelta = timedelta(0)
    max_dequeue_count: int = 5
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, config: Mapping[str, Any]) -> QueueOptions:
        section = get_path(config, "extensions", "queues") or {}
        if not isinstance(section, Mapping):
            raise ConfigError("host.json extensions.queues: must be an object")

        def opt(key: str) -> Any:
            return get_path(section, key)

        batch = (
            _int(opt("batchSize"), what="extensions.queues.batchSize", minimum=1, maximum=32)
            if opt("batchSize") is not None
            else cls.batch_size
        )
        # The extension's default is (batchSize / 2) * processor count, the count being 1 on the
        # Consumption plan, which is what this app targets.
        threshold = (
            _int(opt("newBatchThreshold"), what="extensions.queues.newBatchThreshold", minimum=0)
            if opt("newBatchThreshold") is not None
            else batch // 2
        )
        polling = cls.max_polling_interval
        if opt("maxPollingInterval") is not None:
            polling = parse_timespan(opt("maxPollingInterval"), what="extensions.queues.maxPollingInterval")
            if polling < timedelta(milliseconds=100):
                raise ConfigError("host.json extensions.queues.maxPollingInterval: must not be less than 100 ms")
        visibility = cls.visibility_timeout
        if opt("visibilityTimeout") is not None:
            visibility = parse_timespan(opt("visibilityTimeout"), what="extensions.queues.visibilityTimeout")
            if visibility < timedelta(0):
                raise ConfigError("host.json extensions.queues.visibilityTimeout: must not be negative")
        dequeue = (
            _int(opt("maxDequeueCount"), what="extensions.queues.maxDequeueCount", minimum=1)
            if opt("maxDequeueCount") is not None
            else cls.max_dequeue_count
        )
        encoding = str(opt("messageEncoding") or cls.message_encoding).lower()
        if encoding not in ("base64", "none"):
            raise ConfigError(
                f"host.json extensions.queues.messageEncoding: must be 'base64' or 'none', got {encoding!r}"
            )
        return cls(batch, threshold, polling, visibility, dequeue, encoding)


# Core Tools runs as a non-Consumption host locally, whose default functionTimeout is 30 minutes.
DEFAULT_FUNCTION_TIMEOUT = timedelta(minutes=30)


def function_timeout(config: Mapping[str, Any]) -> timedelta | None:
    """host.json ``functionTimeout``; None means unbounded (``-1``)."""
    value = get_path(config, "functionTimeout")
    if value is None:
        return DEFAULT_FUNCTION_TIMEOUT
    if str(value).strip() == "-1":
        return None
    span = parse_timespan(value, what="functionTimeout")
    if span <= timedelta(0):
        raise ConfigError("host.json functionTimeout: must be positive (or -1 for none)")
    return span


def route_prefix(config: Mapping[str, Any]) -> str:
    value = get_path(config, "extensions", "http", "routePrefix")
    return "api" if value is None else str(value).strip("/")


_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "information": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "none": logging.CRITICAL + 10,
}


def log_levels(config: Mapping[str, Any]) -> dict[str, int]:
    """host.json ``logging.logLevel`` as Python levels; ``default`` maps to the root logger ("").

    Other keys are used as Python logger names (e.g. ``"azure.core": "Warning"``); the host's own
    categories such as ``Function.x.User`` match no Python logger and so do nothing.
    """
    section = get_path(config, "logging", "logLevel") or {}
    levels: dict[str, int] = {}
    if not isinstance(section, Mapping):
        raise ConfigError("host.json logging.logLevel: must be an object")
    for key, value in section.items():
        level = _LEVELS.get(str(value).strip().lower())
        if level is None:
            raise ConfigError(f"host.json logging.logLevel.{key}: unknown level {value!r}")
        levels["" if key.lower() == "default" else key] = level
    return levels


_EXPRESSION = re.compile(r"%([^%]+)%")


def resolve_expressions(value: Any, environ: Mapping[str, str], *, where: str) -> Any:
    """Replace ``%NAME%`` in every string (also inside lists and objects) with the app setting.

    Like the host's name resolver, an unknown setting is an error naming the expression.
    """
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                raise ConfigError(f"{where}: '%{name}%' does not resolve to a value (app setting {name} is not set)")
            return environ[name]

        return _EXPRESSION.sub(substitute, value)
    if isinstance(value, list):
        return [resolve_expressions(v, environ, where=where) for v in value]
    if isinstance(value, dict):
        return {k: resolve_expressions(v, environ, where=where) for k, v in value.items()}
    return value


def storage_connection(setting: str | None, environ: Mapping[str, str], *, where: str) -> str:
    """The connection string a binding's ``connection`` names (the host also tries ``AzureWebJobs{name}``)."""
    name = setting or "AzureWebJobsStorage"
    for candidate in (name, f"AzureWebJobs{name}"):
        value = environ.get(candidate)
        if value:
            return value
    raise ConfigError(
        f"{where}: storage account connection string '{name}' does not exist; make it an app setting "
        "(environment variable or local.settings.json Values)"
    )
