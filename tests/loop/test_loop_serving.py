"""The loop's own model server: started on a free port, listed as `compiled/<workflow>` at the self-hosted
price, adopted by a restarted gateway, restarted when it dies, stopped with its name forgotten."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from loop_helpers import HERE, wait_for

from gateway.loop.payback import LoopConfig
from gateway.loop.serving import ModelServers, read_prompt
from gateway.proxy.pricing import PriceBook
from gateway.settings import parse_settings


def test_the_loop_serves_adopts_restarts_and_stops_an_artifact(tmp_path: Path) -> None:
    art = tmp_path / "job" / "artifact"
    art.mkdir(parents=True)
    (art / "prompt.json").write_text(json.dumps({"persona": "You are Acme's assistant.", "static_lines": ["Procedure."],
                                                 "step_lines": []}))
    cfg = LoopConfig(serve_command=(sys.executable, str(HERE / "step_frontier.py"), "--artifact", "{artifact}",
                                    "--port", "{port}", "--script-dir", str(tmp_path), "--name", "compiled"),
                     self_hosted_input_per_million=0.1, self_hosted_output_per_million=0.4)
    settings = parse_settings("{}", "<test>")
    prices = PriceBook({})
    servers = ModelServers(settings, cfg, prices)
    name = wait_for(lambda: servers.ensure("acme", str(art)), timeout=60, interval=0.3)
    assert name == "compiled/acme" and read_prompt(art) is not None
    model = settings.model(name)
    assert model is not None and model.api_base and model.api_base.startswith("http://127.0.0.1:")
    assert prices.rate(name).input == 0.1 / 1e6 and prices.rate(name).output == 0.4 / 1e6
    pid = servers.pid("acme")
    assert pid is not None
    info = json.loads((art.parent / "serve.json").read_text())
    assert info["pid"] == pid and model.api_base == f"http://127.0.0.1:{info['port']}/v1"

    # a restarted gateway finds the server still running and adopts it instead of starting another
    again = ModelServers(parse_settings("{}", "<test>"), cfg)
    assert again.ensure("acme", str(art)) == name and again.pid("acme") == pid

    # the server dies: its name is forgotten at once (requests take the normal path) and it is started again
    os.kill(pid, signal.SIGKILL)
    servers.children["acme"].wait(10)
    assert servers.ensure("acme", str(art)) is None and settings.model(name) is None
    assert wait_for(lambda: servers.ensure("acme", str(art)), timeout=60, interval=0.3) == name
    new_pid = servers.pid("acme")
    assert new_pid is not None and new_pid != pid

    servers.close()
    assert settings.model(name) is None and not (art.parent / "serve.json").exists()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{new_pid}").exists():
        if "Z" in Path(f"/proc/{new_pid}/stat").read_text().rsplit(")", 1)[1].split()[:1]:
            break
        time.sleep(0.1)
    assert not Path(f"/proc/{new_pid}").exists() or "Z" in Path(f"/proc/{new_pid}/stat").read_text().rsplit(")", 1)[1].split()[:1]
