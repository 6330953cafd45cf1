"""What arm.py and arm_defender.py share: ARM's error body, and the names the control API takes."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .control import _bad
from .errors import ServiceError


class ArmError(ServiceError):
    def body(self, request: web.Request) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


def control_names(body: dict[str, Any], last: str = "name") -> tuple[str, str, str]:
    """`subscription`, `resourceGroup` and the resource's own name (`last`) of a control request, all required."""
    sub, rg, name = (body.get(k) for k in ("subscription", "resourceGroup", last))
    if not (isinstance(sub, str) and sub and isinstance(rg, str) and rg and isinstance(name, str) and name):
        raise _bad(f"'subscription', 'resourceGroup' and '{last}' are required")
    return sub, rg, name
