"""`tiergate proposals / approve / reject / jobs`: against the store, and against a running gateway's API."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from loop_helpers import ADMIN, FLOWCHART, ledger_rows, seed, wait_for
from sqlalchemy import Engine
from typer.testing import CliRunner

from gateway.loop.cli import register
from gateway.loop.payback import LoopConfig
from gateway.loop.proposals import list_proposals, raise_due
from gateway.store.engine import make_engine, migrate

pytest_plugins = ["loop_fixtures"]  # store, start_loop_gateway

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def run(*args: str) -> Any:
    return CliRunner().invoke(cli(), list(args))


@pytest.fixture
def configured(tmp_path: Path) -> tuple[Path, Engine]:
    db = tmp_path / "cli.db"
    path = tmp_path / "tiergate.yaml"
    path.write_text(yaml.safe_dump({
        "storage": {"url": f"sqlite:///{db}"},
        "workflows": [{"name": "travel-booking", "flowchart": str(FLOWCHART)}],
        "loop": {"min_conversations": 1, "compile_cost_usd": 0.01, "stability_window_s": 0,
                 "jobs_dir": str(tmp_path / "jobs")},
    }))
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine)
    seed(engine, ledger_rows("travel-booking", 5, start=time.time() - 100))
    seed(engine, ledger_rows("support-bot", 5, fingerprint="fp-s", start=time.time() - 100))
    cfg = LoopConfig(min_conversations=1, compile_cost_usd=0.01, stability_window_s=0)
    assert len(raise_due(engine, cfg)) == 2
    return path, engine


def test_proposals_approve_reject_against_the_store(configured: tuple[Path, Engine]) -> None:
    path, engine = configured
    ids = {p["workflow"]: p["id"] for p in list_proposals(engine)}
    res = run("proposals", "--config", str(path))
    assert res.exit_code == 0, res.output
    assert "travel-booking" in res.output and "support-bot" in res.output and "open" in res.output
    res = run("proposals", "--config", str(path), "--json", "--status", "open")
    assert {p["id"] for p in json.loads(res.stdout)} == set(ids.values())

    res = run("approve", str(ids["travel-booking"]), "--config", str(path), "--by", "ana", "--note", "ship it")
    assert res.exit_code == 0, res.output
    assert f"proposal {ids['travel-booking']} (travel-booking) approved by ana; compile job 1 queued" in res.stdout
    res = run("reject", str(ids["support-bot"]), "--config", str(path))
    assert res.exit_code == 0 and "rejected by cli:" in res.stdout
    decided = {p["workflow"]: p for p in list_proposals(engine)}
    assert (decided["travel-booking"]["status"], decided["travel-booking"]["decided_by"]) == ("approved", "ana")
    assert decided["support-bot"]["status"] == "rejected" and decided["support-bot"]["decided_by"].startswith("cli:")
    res = run("jobs", "--config", str(path), "--json")
    assert json.loads(res.stdout)[0]["state"] == "queued"

    again = run("approve", str(ids["travel-booking"]), "--config", str(path))
    assert again.exit_code == 1 and again.stderr.count("\n") == 1 and "already approved by ana" in again.stderr
    missing = run("reject", "77", "--config", str(path))
    assert missing.exit_code == 2 and missing.stderr.startswith("tiergate: No proposal `77`")
    bad = run("proposals", "--config", str(path), "--status", "maybe")
    assert bad.exit_code == 2 and "--status `maybe` is unknown" in bad.stderr


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("loop:\n  min_conversation: 3\n")
    res = run("proposals", "--config", str(path))
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
    assert "loop.min_conversation: unknown key" in res.stderr and "Traceback" not in res.output


def test_cli_through_a_running_gateway_needs_the_admin_key(start_loop_gateway: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    gw = start_loop_gateway({"min_conversations": 1, "compile_cost_usd": 0.001, "serve_command": None})
    engine = gw.engine()
    seed(engine, ledger_rows("travel-booking", 3, start=time.time() - 100))
    prop = wait_for(lambda: list_proposals(engine))
    assert prop, "no proposal raised"
    pid = str(prop[0]["id"])
    monkeypatch.delenv("TIERGATE_ADMIN_KEY", raising=False)
    res = run("proposals", "--url", gw.url)
    assert res.exit_code == 2 and "needs the admin key" in res.stderr
    res = run("reject", pid, "--url", gw.url, "--admin-key", "wrong")
    assert res.exit_code == 2 and "needs the admin key" in res.stderr
    monkeypatch.setenv("TIERGATE_ADMIN_KEY", ADMIN)
    res = run("proposals", "--url", gw.url, "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)[0]["workflow"] == "travel-booking"
    res = run("reject", pid, "--url", gw.url, "--by", "carol")
    assert res.exit_code == 0 and "rejected by carol" in res.stdout
    res = run("approve", pid, "--url", gw.url)
    assert res.exit_code == 1 and "already rejected by carol" in res.stderr
    res = run("proposals", "--url", "http://127.0.0.1:9")
    assert res.exit_code == 1 and "cannot reach the gateway" in res.stderr
    engine.dispose()
