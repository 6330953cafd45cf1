"""DESIGN.md's rule for the package, read off the code's imports: arrows point one way.

- `pipeline/` and `unpack/` import nothing from `sources/` (a source hands the pipeline a mail in hand);
- `unpack/` imports nothing from `pipeline/` (it knows formats, not storage);
- nothing below `workers.py` and `cli.py` imports them (they are the entry points).

Every import counts, those made inside functions or under TYPE_CHECKING too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "shared"
ENTRY_POINTS = ("shared.workers", "shared.cli")


def module_name(root: Path, path: Path) -> str:
    parts = (root.name, *path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(root: Path, path: Path) -> set[str]:
    """The package's modules (and names in them) this file imports, as absolute dotted names."""
    name = module_name(root, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {t for t in found if t == root.name or t.startswith(root.name + ".")}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(root: Path) -> list[str]:
    """Each import that breaks the rule, as `importer -> imported (why)`."""
    top = root.name
    rules = [
        (f"{top}.pipeline", f"{top}.sources", "the pipeline knows no source"),
        (f"{top}.unpack", f"{top}.sources", "unpack knows no source"),
        (f"{top}.unpack", f"{top}.pipeline", "unpack knows no storage"),
    ]
    entry_points = {f"{top}.{e.rpartition('.')[2]}" for e in ENTRY_POINTS}
    rules += [(top, entry, "only the triggers call the entry points") for entry in sorted(entry_points)]
    found = []
    for path in sorted(root.rglob("*.py")):
        importer = module_name(root, path)
        targets = imports_of(root, path)
        for below, above, why in rules:
            if _within(importer, below) and importer not in entry_points:
                wrong = [t for t in targets if _within(t, above)]
                if wrong:  # one line per import, named by its longest form (`from x import y` gives x and x.y)
                    found.append(f"{importer} -> {max(wrong, key=len)} ({why})")
    return found


def test_the_package_keeps_its_arrows_one_way() -> None:
    assert violations(PACKAGE) == []


@pytest.mark.parametrize(
    ("module", "line", "why"),
    [
        ("pipeline/store.py", "from ..sources.graph import client", "the pipeline knows no source"),
        ("pipeline/store.py", "import shared.sources.imap", "the pipeline knows no source"),
        ("unpack/zips.py", "from ..pipeline import job", "unpack knows no storage"),
        ("unpack/zips.py", "from ..sources import fetch", "unpack knows no source"),
        ("sources/poll.py", "from .. import workers", "only the triggers call the entry points"),
        ("ops/health.py", "from ..cli import main", "only the triggers call the entry points"),
    ],
)
def test_a_planted_import_against_the_arrows_is_found(tmp_path: Path, module: str, line: str, why: str) -> None:
    root = tmp_path / "shared"
    for folder in ("pipeline", "unpack", "sources/graph", "sources/imap", "ops"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    for name in ("workers.py", "cli.py", "sources/poll.py", "sources/fetch.py", "sources/graph/client.py"):
        (root / name).write_text("")
    (root / module).write_text(f"def later() -> None:\n    {line}\n")  # inside a function counts too
    (found,) = violations(root)
    assert found.endswith(f"({why})")
