"""HTTP trigger route templates (the ASP.NET subset Functions apps use).

Supported: literal segments (case-insensitive), ``{name}``, ``{name?}``, ``{name:constraint}``
(int, long, bool, guid, alpha, double, decimal, float), ``{name=default}``, ``{*rest}`` (catch-all),
and parameters inside a segment (``files/{name}.{ext}``). When several routes match, the most
specific wins (literals before constrained parameters before plain ones before catch-alls).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

_PARAM = re.compile(r"\{([^{}]+)\}")
_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "bool": r"(?i:true|false)",
    "guid": r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}",
    "alpha": r"[A-Za-z]+",
    "double": r"-?\d+(?:\.\d+)?",
    "decimal": r"-?\d+(?:\.\d+)?",
    "float": r"-?\d+(?:\.\d+)?",
}


class RouteError(ValueError):
    pass


@dataclass
class Route(Generic[T]):
    template: str
    target: T
    pattern: re.Pattern[str] = field(init=False)
    defaults: dict[str, str] = field(init=False, default_factory=dict)
    precedence: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.pattern, self.defaults, self.precedence = compile_template(self.template)

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(path.strip("/"))
        if found is None:
            return None
        params = dict(self.defaults)
        params.update({k: v for k, v in found.groupdict().items() if v is not None})
        return params


def _parameter(spec: str, *, template: str) -> tuple[str, str, bool, str | None, int]:
    """name, regex, optional, default, precedence rank for one ``{...}``."""
    catch_all = spec.startswith("*")
    spec = spec.lstrip("*")
    default = None
    if "=" in spec:
        spec, default = spec.split("=", 1)
    optional = spec.endswith("?")
    spec = spec.rstrip("?")
    name, *constraints = spec.split(":")
    if not name.isidentifier():
        raise RouteError(f"route {template!r}: bad parameter name {name!r}")
    regex = r".*" if catch_all else r"[^/]+"
    rank = 4 if catch_all else 2
    for constraint in constraints:
        base = constraint.split("(", 1)[0].lower()
        if base in _CONSTRAINTS:
            regex = _CONSTRAINTS[base]
            rank = 1
    if default is not None or optional:
        rank = max(rank, 3)
    return name, regex, optional or default is not None, default, rank


def compile_template(template: str) -> tuple[re.Pattern[str], dict[str, str], tuple[int, ...]]:
    segments = [s for s in template.strip("/").split("/") if s] if template.strip("/") else []
    parts: list[str] = []
    defaults: dict[str, str] = {}
    precedence: list[int] = []
    for index, segment in enumerate(segments):
        whole = _PARAM.fullmatch(segment)
        if whole:
            name, regex, optional, default, rank = _parameter(whole.group(1), template=template)
            if default is not None:
                defaults[name] = default
            group = f"(?P<{name}>{regex})"
            separator = "/" if index else ""
            if optional:
                # An optional parameter may be left out together with its slash.
                parts.append(f"(?:{separator}{group})?")
            else:
                parts.append(separator + group)
            precedence.append(rank)
            continue
        pieces: list[str] = []
        position = 0
        for found in _PARAM.finditer(segment):
            pieces.append(re.escape(segment[position : found.start()]))
            name, regex, _optional, _default, _rank = _parameter(found.group(1), template=template)
            # Greedy, so the last literal splits from the right, as ASP.NET matches complex segments.
            pieces.append(f"(?P<{name}>{regex})")
            position = found.end()
        pieces.append(re.escape(segment[position:]))
        parts.append(("/" if index else "") + "".join(pieces))
        precedence.append(0 if position == 0 else 1)
    try:
        pattern = re.compile("(?i:" + "".join(parts) + ")" if parts else "")
    except re.error as exc:
        raise RouteError(f"route {template!r}: {exc}") from exc
    return pattern, defaults, tuple(precedence)


class RouteTable(Generic[T]):
    def __init__(self) -> None:
        self._routes: list[Route[T]] = []

    def add(self, template: str, target: T) -> None:
        self._routes.append(Route(template, target))
        # Most specific first; fewer segments do not beat more literal ones.
        self._routes.sort(key=lambda r: (*r.precedence, 5))

    def match(self, path: str) -> list[tuple[T, dict[str, str]]]:
        """Every route matching ``path``, most specific first."""
        results = []
        for route in self._routes:
            params = route.match(path)
            if params is not None:
                results.append((route.target, params))
        return results
