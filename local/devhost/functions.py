"""Load the app module and describe its functions from their own binding metadata.

The Python worker indexes a v2-model app by importing ``function_app.py`` (``PYTHON_SCRIPT_FILE_NAME``),
taking its one ``FunctionRegister`` and sending each function's ``get_raw_bindings()`` to the host.
We do the same and check what the worker checks: every parameter is a binding or ``context``.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import azure.functions as func

from .config import ConfigError, resolve_expressions

TRIGGERS = ("httpTrigger", "queueTrigger", "timerTrigger")
OUTPUTS = ("http", "queue")


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    user_function: Callable[..., Any]
    trigger: dict[str, Any]
    outputs: list[dict[str, Any]]
    parameters: list[str]
    annotations: dict[str, Any] = field(default_factory=dict)

    @property
    def trigger_type(self) -> str:
        return str(self.trigger["type"])

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.user_function)

    @property
    def has_context(self) -> bool:
        return "context" in self.parameters


def import_app_module(app_dir: Path, script: str) -> ModuleType:
    module_name = script[:-3] if script.endswith(".py") else script
    if str(app_dir) not in sys.path[:1]:
        sys.path.insert(0, str(app_dir))
    try:
        return importlib.import_module(module_name)
    except ConfigError:
        raise
    except Exception as exc:
        # The app's own import-time failure (e.g. a missing package or setting) is the start-up error.
        raise ConfigError(f"importing {module_name}.py failed: {type(exc).__name__}: {exc}") from exc


def find_app(module: ModuleType) -> func.FunctionRegister:
    apps = [value for value in vars(module).values() if isinstance(value, func.FunctionRegister)]
    # The same object may be bound to several names.
    unique = list({id(a): a for a in apps}.values())
    if not unique:
        raise ConfigError(f"{module.__name__}.py defines no azure.functions.FunctionApp")
    if len(unique) > 1:
        raise ConfigError(f"{module.__name__}.py defines more than one FunctionApp; the worker accepts only one")
    return unique[0]


def _annotations(function: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except Exception:
        # Unresolvable forward references only cost us type-driven conversion; fall back to raw ones.
        return dict(getattr(function, "__annotations__", {}))


def describe(app: func.FunctionRegister, environ: Mapping[str, str]) -> list[FunctionSpec]:
    """FunctionSpecs with ``%NAME%`` resolved; raises ConfigError naming the first problem."""
    specs = []
    try:
        functions = app.get_functions()
    except Exception as exc:
        raise ConfigError(f"indexing the functions failed: {exc}") from exc
    for function in functions:
        name = function.get_function_name() or function.get_user_function().__name__
        where = f"function '{name}'"
        bindings = [json.loads(raw) for raw in function.get_raw_bindings()]
        bindings = [resolve_expressions(b, environ, where=f"{where}, binding '{b.get('name')}'") for b in bindings]
        triggers = [b for b in bindings if str(b.get("type", "")).endswith("Trigger")]
        if len(triggers) != 1:
            raise ConfigError(f"{where}: expected exactly one trigger, found {len(triggers)}")
        trigger = triggers[0]
        if trigger["type"] not in TRIGGERS:
            raise ConfigError(f"{where}: trigger type '{trigger['type']}' is not supported by the dev host")
        outputs = []
        for binding in bindings:
            if binding is trigger:
                continue
            direction = str(binding.get("direction", "")).upper()
            if direction != "OUT" or binding.get("type") not in OUTPUTS:
                raise ConfigError(
                    f"{where}: binding '{binding.get('name')}' ({binding.get('type')}, {direction.lower()}) "
                    "is not supported by the dev host"
                )
            outputs.append(binding)
        user_function = function.get_user_function()
        parameters = list(inspect.signature(user_function).parameters)
        bound = {trigger["name"], *(b["name"] for b in outputs)}
        unbound = [p for p in parameters if p not in bound and p != "context"]
        if unbound:
            # Same rule (and nearly the same words) as the worker's indexing.
            raise ConfigError(f"{where}: parameters declared in Python but not bound: {', '.join(unbound)}")
        missing = [b["name"] for b in outputs if b["name"] != "$return" and b["name"] not in parameters]
        if trigger["name"] not in parameters:
            missing.insert(0, trigger["name"])
        if missing:
            raise ConfigError(f"{where}: bindings without a Python parameter: {', '.join(missing)}")
        specs.append(
            FunctionSpec(
                name=name,
                user_function=user_function,
                trigger=trigger,
                outputs=outputs,
                parameters=parameters,
                annotations=_annotations(user_function),
            )
        )
    return specs
