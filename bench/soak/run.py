"""Soak the ledger: many requests, every upstream fault at random, then count rows against requests sent.

    python bench/soak/run.py --requests 20000 --concurrency 64 --store sqlite
    python bench/soak/run.py --requests 20000 --concurrency 64 --store postgresql   # TIERGATE_TEST_PG_URL

Everything on loopback, bounded by --requests and --timeout; it stops itself. It runs the test suite's
soak (tests/proxy/test_soak.py) at a larger size: the fake upstream (tests/fake_upstream.py) in chaos
mode, a real `tiergate serve`, the official SDK as the clients, then a graceful stop (SIGTERM) and a
check that the store holds exactly one row per request id the clients were given, each row saying
what its client saw. Prints the mix of outcomes and the figures; exits 1 if the ledger does not match.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "proxy")]

from fault_harness import FaultGateway, store_url  # noqa: E402
from soak_driver import check_ledger, drive, set_chaos  # noqa: E402
from tg_testing import Proc, Upstream, free_port  # noqa: E402


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=900, help="seconds before the run gives up")
    return p


def main() -> int:
    args = make_parser().parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tg-soak-"))
    ups: dict[str, Upstream] = {}
    for name in ("frontier", "cheap"):
        port = free_port()
        proc = Proc(
            [sys.executable, str(ROOT / "tests" / "fake_upstream.py"), "--port", str(port), "--name", name],
            tmp / f"{name}.log",
        ).start()
        ups[name] = Upstream(name, port, proc)
    try:
        for up in ups.values():
            up.proc.wait_http(f"{up.base}/v1/models")
        set_chaos(ups["frontier"].base, args.seed)
        for url in store_url(args.store, tmp):
            gw = FaultGateway.start(tmp, ups, url, {"server": {"log_level": "error"}})
            t0 = time.monotonic()
            try:
                outcomes = asyncio.run(
                    asyncio.wait_for(drive(gw.v1, args.requests, args.concurrency, args.seed), args.timeout)
                )
            finally:
                code = gw.stop()
            took = time.monotonic() - t0
            rows = gw.all_rows()
            mix = check_ledger(outcomes, rows)
            letters = gw.dead_letters()
            print(
                f"store {args.store}: {len(outcomes)} requests sent in {took:.1f}s "
                f"({len(outcomes) / took:.0f}/s, concurrency {args.concurrency}); graceful stop exit {code}"
            )
            print(
                f"ledger rows {len([r for r in rows if r['tier'] != 'shadow'])}, distinct ids match, "
                f"dead letters {len(letters)}"
            )
            for kind, n in sorted(mix.items(), key=lambda kv: -kv[1]):
                print(f"  {n:7d}  {kind}")
            ok = code in (0, -signal.SIGTERM) and not letters
            print("command:", " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]))
            return 0 if ok else 1
    finally:
        for up in ups.values():
            up.proc.stop()
    return 1


if __name__ == "__main__":
    sys.exit(main())
