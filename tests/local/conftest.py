"""Fixtures for the local-stack tests: one Azure simulator per test module, clients of it, and a
webhook receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from aiohttp import web

from local.azuresim.runner import SimulatorProcess, start_simulator
from tests.local.simclient import Receiver, get_token


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorProcess]:
    with start_simulator(tmp_path_factory.mktemp("azuresim")) as process:
        yield process


@pytest.fixture(scope="module")
def ca_env(sim: SimulatorProcess) -> Iterator[None]:
    # MSAL (requests) reads REQUESTS_CA_BUNDLE per request; restored afterwards for other modules.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SSL_CERT_FILE", sim.ca_file)
        patch.setenv("REQUESTS_CA_BUNDLE", sim.ca_file)
        yield


@pytest.fixture(scope="module")
async def http(sim: SimulatorProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.url, verify=sim.ssl_context(), timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
async def graph(http: httpx.AsyncClient, sim: SimulatorProcess) -> dict[str, str]:
    """Authorization header for Graph."""
    return {"Authorization": f"Bearer {await get_token(http, sim)}"}


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", hook.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hook.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield hook
    await runner.cleanup()
