"""Exchange Online as a resource of the simulated identity platform: app-only tokens for IMAP and POP."""

from __future__ import annotations

import httpx

from local.azuresim.runner import SimulatorProcess
from tests.local.simclient import claims_of, get_token


async def test_each_resource_gets_its_own_application_permissions(http: httpx.AsyncClient, sim: SimulatorProcess):
    granted = await http.post("/_sim/roles", json={"roles": ["Mail.Read", "IMAP.AccessAsApp", "POP.AccessAsApp"]})
    assert granted.status_code == 200
    try:
        exchange = claims_of(await get_token(http, sim, "https://outlook.office365.com/.default"))
        assert exchange["aud"] == "https://outlook.office365.com"
        assert sorted(exchange["roles"]) == ["IMAP.AccessAsApp", "POP.AccessAsApp"]
        by_app_id = claims_of(await get_token(http, sim, "00000002-0000-0ff1-ce00-000000000000/.default"))
        assert by_app_id["aud"] == "https://outlook.office365.com"
        graph = claims_of(await get_token(http, sim))
        assert graph["roles"] == ["Mail.Read"]
    finally:
        await http.post("/_sim/roles", json={"roles": ["Mail.Read", "Mail.ReadWrite"]})


async def test_without_an_exchange_permission_the_token_has_no_roles(http: httpx.AsyncClient, sim: SimulatorProcess):
    claims = claims_of(await get_token(http, sim, "https://outlook.office365.com/.default"))
    assert "roles" not in claims
