"""The loop serves a compiled artifact itself: `tiergate serve-model DIR` on a free loopback port.

    served = ModelServers(settings, cfg, prices)
    name = served.ensure("acme", "/jobs/acme-p3/artifact")   # the model name once healthy, else None
    served.stop("acme"); served.close()

No per-workflow configuration: the model is named `compiled/<workflow>`, listed with the settings'
models at run time (`Settings.manage_model`) with the loop's self-hosted prices, so the request path
routes and prices it like a configured one. `loop.compiled_models` still names a model served
elsewhere (vLLM on another host) and then wins. The child runs in its own session and outlives a
crashed gateway; its pid and port sit in `serve.json` beside the artifact, so a restarted gateway
adopts a live one instead of starting a second.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from gateway.loop.payback import LoopConfig
from gateway.proxy.pricing import PriceBook, Rate
from gateway.settings import ModelConfig, Price, Settings

log = logging.getLogger("tiergate.serving")

PREFIX = "compiled/"


def model_name(workflow: str) -> str:
    return PREFIX + workflow


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def read_prompt(artifact: str | Path | None) -> dict[str, Any] | None:
    """`prompt.json` of an artifact compiled from traffic (persona, static and step lines), else None."""
    if not artifact:
        return None
    try:
        data = json.loads((Path(artifact) / "prompt.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("persona"), str) else None


def _alive(pid: int, artifact: str) -> bool:
    try:
        os.kill(pid, 0)
        return artifact.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ProcessLookupError):
        return False


class ModelServers:
    """Per workflow, the `serve-model` child serving its artifact; blocking methods (the loop's thread)."""

    def __init__(self, settings: Settings, cfg: LoopConfig, prices: PriceBook | None = None):
        self.settings = settings
        self.cfg = cfg
        self.prices = prices
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, tuple[int, int, str]] = {}  # workflow -> (pid, port, artifact)
        self.starting: set[str] = set()  # servers for a canary that has not started yet (kept through rollbacks)

    def command(self, artifact: str, port: int) -> list[str]:
        cmd = list(self.cfg.serve_command or ()) or [sys.executable, "-m", "gateway.cli", "serve-model", "{artifact}",
                                                     "--port", "{port}"]
        return [c.replace("{artifact}", artifact).replace("{port}", str(port)) for c in cmd]

    def _register(self, workflow: str, port: int) -> str:
        name = model_name(workflow)
        price = Price(input_per_million=self.cfg.self_hosted_input_per_million,
                      output_per_million=self.cfg.self_hosted_output_per_million)
        self.settings.manage_model(ModelConfig(name=name, upstream=f"openai/{workflow}",
                                               api_base=f"http://127.0.0.1:{port}/v1", price=price, max_retries=0))
        if self.prices is not None:
            self.prices.set_rate(name, Rate(price.input_per_million / 1e6, price.output_per_million / 1e6,
                                            price.input_per_million / 1e6))
        return name

    def ensure(self, workflow: str, artifact: str) -> str | None:
        """Start (or adopt) the server for `artifact`; the model name once it answers /healthz, else None."""
        known = self.ports.get(workflow)
        if known and known[2] != artifact:
            self.stop(workflow)
            known = None
        if known is None:
            known = self._adopt(workflow, artifact) or self._start(workflow, artifact)
            if known is None:
                return None
            self.ports[workflow] = known
        pid, port, _ = known
        child = self.children.get(workflow)
        if (child is not None and child.poll() is not None) or (child is None and not _alive(pid, artifact)):
            log.warning("the model server of `%s` (pid %d) exited; starting it again", workflow, pid)
            self.settings.unmanage_model(model_name(workflow))  # meanwhile its requests take the normal path
            self.ports.pop(workflow, None)
            self.children.pop(workflow, None)
            return None
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2.0).status_code != 200:
                return None
        except httpx.HTTPError:
            return None
        return self._register(workflow, port)

    def _adopt(self, workflow: str, artifact: str) -> tuple[int, int, str] | None:
        try:
            info = json.loads((Path(artifact).parent / "serve.json").read_text())
            pid, port = int(info["pid"]), int(info["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if info.get("artifact") != artifact or not _alive(pid, artifact):
            return None
        log.info("adopted the model server of `%s`: pid %d on port %d", workflow, pid, port)
        return pid, port, artifact

    def _start(self, workflow: str, artifact: str) -> tuple[int, int, str] | None:
        port = free_port()
        cmd = self.command(artifact, port)
        folder = Path(artifact).parent
        try:
            with open(folder / "serve.log", "ab") as logf:
                proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        except OSError as exc:
            log.error("cannot start the model server for `%s` (%s): %s; set loop.serve_command",
                      workflow, " ".join(cmd), exc.strerror or exc)
            return None
        self.children[workflow] = proc
        (folder / "serve.json").write_text(json.dumps({"pid": proc.pid, "port": port, "artifact": artifact}))
        log.info("serving `%s` (%s) as pid %d on port %d", workflow, artifact, proc.pid, port)
        return proc.pid, port, artifact

    def pid(self, workflow: str) -> int | None:
        known = self.ports.get(workflow)
        return known[0] if known else None

    def stop(self, workflow: str) -> None:
        """Stop the workflow's server (rollback, a newer artifact) and forget its model name."""
        self.settings.unmanage_model(model_name(workflow))
        known = self.ports.pop(workflow, None)
        child = self.children.pop(workflow, None)
        if child is not None:
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait(5)
        elif known and _alive(known[0], known[2]):
            try:
                os.kill(known[0], 15)
            except OSError:
                pass
        if known:
            (Path(known[2]).parent / "serve.json").unlink(missing_ok=True)

    def close(self) -> None:
        """Gateway shutdown: stop every server this loop started or adopted."""
        for wf in list(self.ports):
            self.stop(wf)
