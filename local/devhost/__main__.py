"""``python -m local.devhost [--app-dir .] [--host 127.0.0.1] [--port 7071] [--ready-file F] [--keys-file F]``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from .host import Options, run


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m local.devhost", description=__doc__)
    parser.add_argument("--app-dir", type=Path, default=Path("."), help="the function app's folder (default: .)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7071, help="port; 0 picks a free one (default: 7071)")
    parser.add_argument(
        "--ready-file",
        type=Path,
        help='written as {"url", "pid"} once listening and all triggers are started',
    )
    parser.add_argument(
        "--script",
        default="function_app.py",
        help="app module (PYTHON_SCRIPT_FILE_NAME wins; default: function_app.py)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        help="seconds in-flight invocations get on shutdown (default: 30)",
    )
    parser.add_argument(
        "--keys-file",
        type=Path,
        help="the host's keys (master and host keys; made with fresh keys if missing; default: .devhost/keys.json)",
    )
    args = parser.parse_args(argv)
    return Options(
        app_dir=args.app_dir,
        host=args.host,
        port=args.port,
        ready_file=args.ready_file.resolve() if args.ready_file else None,
        script=args.script,
        shutdown_timeout=args.shutdown_timeout,
        keys_file=args.keys_file.resolve() if args.keys_file else None,
    )


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
