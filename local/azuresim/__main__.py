"""``python -m local.azuresim --data-dir DIR``: serve the simulator over HTTPS until SIGTERM/SIGINT.

Writes ``DIR/ca.pem`` first and ``DIR/azuresim.json`` (atomically) once listening; removes the
latter on exit so a stale file never points at a dead port."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import ssl
import sys
import uuid
from pathlib import Path

import trustme
from aiohttp import web

from .app import build


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m local.azuresim", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--tenant-id", default=None, help="default: a new GUID")
    parser.add_argument("--client-id", default=None, help="default: a new GUID")
    parser.add_argument("--client-secret", default=None, help="default: a new random secret")
    return parser.parse_args(argv)


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def server_tls(data_dir: Path) -> ssl.SSLContext:
    """A fresh test CA per run; its certificate goes to ``ca.pem`` for clients to trust."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(data_dir / "ca.pem"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


async def serve(args: argparse.Namespace, data_dir: Path, context: ssl.SSLContext) -> None:
    ready_file = data_dir / "azuresim.json"
    tenant_id = args.tenant_id or str(uuid.uuid4())
    client_id = args.client_id or str(uuid.uuid4())
    client_secret = args.client_secret or secrets.token_urlsafe(30)

    simulator = build(tenant_id, client_id, client_secret)
    runner = web.AppRunner(simulator.app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    url = f"https://127.0.0.1:{port}"
    info = {
        "url": url,
        "ca_file": str(data_dir / "ca.pem"),
        "pid": os.getpid(),
        "tenant_id": tenant_id,
        "client_id": client_id,
        "client_secret": client_secret,
        "authority_host": url,
        "graph_url": f"{url}/v1.0",
        "key_vault_url": f"{url}/",
    }
    write_atomically(ready_file, json.dumps(info, indent=2))
    print(f"azuresim listening on {url} (data dir {data_dir})", file=sys.stderr, flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        ready_file.unlink(missing_ok=True)
        await runner.cleanup()
        print("azuresim stopped", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("azuresim listens on loopback only")
    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "azuresim.json").unlink(missing_ok=True)
    context = server_tls(data_dir)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args, data_dir, context))


if __name__ == "__main__":
    main()
