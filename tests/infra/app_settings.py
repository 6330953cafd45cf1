"""The names of the settings the app reads, found in its source at test time (no copy to drift).

- shared/**/*.py (settings.py and the roles' own sections, such as pipeline/rules.py): every string passed next
  to the environment mapping `env`: `env.get("X")`, `env["X"]`, and reader calls such as
  `read_required(env, "X")` or `read_int(env, "X", ...)`.
- function_app.py and shared/*.py: `os.environ.get("X")`, `os.environ["X"]`, `os.getenv("X")`, and
  `%X%` binding expressions (app settings the Functions host resolves).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_BINDING_EXPRESSION = re.compile(r"%([A-Za-z][A-Za-z0-9_]*)%")


def _const(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and _NAME.match(node.value):
        return node.value
    return None


def _is_name(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _is_os_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ" and _is_name(node.value, "os")


def names_passed_with_env(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "get" and _is_name(func.value, "env") and node.args:
                names.add(_const(node.args[0]) or "")
            for arg, following in zip(node.args, node.args[1:], strict=False):
                if _is_name(arg, "env"):
                    names.add(_const(following) or "")
        elif isinstance(node, ast.Subscript) and _is_name(node.value, "env"):
            names.add(_const(node.slice) or "")
    return names - {""}


def names_from_os_environ(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            environ_get = isinstance(func, ast.Attribute) and func.attr == "get" and _is_os_environ(func.value)
            getenv = isinstance(func, ast.Attribute) and func.attr == "getenv" and _is_name(func.value, "os")
            if environ_get or getenv:
                names.add(_const(node.args[0]) or "")
        elif isinstance(node, ast.Subscript) and _is_os_environ(node.value):
            names.add(_const(node.slice) or "")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.update(_BINDING_EXPRESSION.findall(node.value))
    return names - {""}


def settings_read_by_app(repo: Path) -> set[str]:
    names: set[str] = set()
    for path in sorted((repo / "shared").rglob("*.py")):
        names |= names_passed_with_env(path.read_text())
    for path in [repo / "function_app.py", *sorted((repo / "shared").glob("*.py"))]:
        names |= names_from_os_environ(path.read_text())
    return names
