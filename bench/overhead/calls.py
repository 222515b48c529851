"""Python function calls and CPU time per request through the real app, in one process.

    python bench/overhead/calls.py                      # this checkout
    python bench/overhead/calls.py /tmp/before          # another checkout (e.g. `git worktree add`)
    python bench/overhead/calls.py --defaults '{"capture": false}'   # a `defaults:` section over the config

Why beside run.py: on a shared 2-core machine wrk's figures move by +-20% between identical runs, so
a refactor's cost hides in the noise. The number of Python calls one request makes (counted with
`sys.setprofile`, app and in-process httpx client together, against bench/overhead/upstream.py on a
port) barely moves between runs, so it shows whether a change added layers on the request path.
CPU µs per request is printed too, for what it is worth on a loaded machine.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=str(HERE.parent.parent), help="checkout to measure")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured requests per mode")
    parser.add_argument("--counted", type=int, default=50, help="requests whose Python calls are counted")
    parser.add_argument("--timed", type=int, default=400, help="requests whose CPU time is measured")
    parser.add_argument("--defaults", default=None, help="JSON for the config's `defaults:` section (rungs)")
    return parser


async def measure(app: Any, chat_request: Any, args: argparse.Namespace) -> None:
    import httpx

    calls = 0

    def count(_frame: FrameType, event: str, _arg: Any) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"  # a loopback Host: open mode refuses others
        ) as client:
            for stream in (False, True):
                body = json.dumps(chat_request(stream)).encode()
                headers = {"content-type": "application/json"}

                async def one(body: bytes = body, headers: dict[str, str] = headers) -> None:
                    async with client.stream(
                        "POST", "/v1/chat/completions", content=body, headers=headers
                    ) as r:
                        async for _ in r.aiter_bytes():
                            pass
                        if r.status_code != 200:
                            raise SystemExit(f"calls.py: the gateway answered {r.status_code}")

                for _ in range(args.warmup):
                    await one()
                calls = 0
                sys.setprofile(count)
                for _ in range(args.counted):
                    await one()
                sys.setprofile(None)
                per_request = calls / args.counted
                t0 = time.process_time()
                for _ in range(args.timed):
                    await one()
                cpu_us = (time.process_time() - t0) / args.timed * 1e6
                mode = "stream" if stream else "non-stream"
                print(f"{mode}: {per_request:.0f} Python calls/request, {cpu_us:.0f} µs CPU/request")


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    root = Path(args.root).resolve()
    sys.path[:0] = [str(root), str(root / "bench" / "overhead")]
    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(root / "bench/overhead/upstream.py"), "--port", str(port)]
    )
    store = tempfile.mkdtemp(prefix="tiergate-calls-")
    os.environ.update(
        TIERGATE_BENCH_UPSTREAM_PORT=str(port),
        TIERGATE_BENCH_DB_URL=f"sqlite:///{store}/ledger.db",
        TIERGATE_BENCH_UPSTREAM_KEY="bench",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
    )
    try:
        from workload import chat_request  # type: ignore[import-not-found]

        from gateway.settings import load_settings

        try:
            factory = importlib.import_module("gateway.web.app")
        except ImportError:  # a checkout from before gateway/ moved into wings (issue 10)
            factory = importlib.import_module("gateway.app")
        settings = load_settings(root / "bench/overhead/tiergate.yaml")
        if args.defaults is not None:
            settings = settings.model_copy(update={"defaults": json.loads(args.defaults)})
        app = factory.create_app(settings)
        time.sleep(1.0)  # the upstream binds its port
        asyncio.run(measure(app, chat_request, args))
    finally:
        upstream.terminate()
        upstream.wait(10)


if __name__ == "__main__":
    main()
