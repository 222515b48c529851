"""How to start each system under test in front of the fixed-answer upstream, and where to send requests.

    target = start_litellm(procs, ctx)   # a Target with its URL and headers, already answering

Every gateway gets the same treatment: one process (one worker), pinned to the gateway core, logging
at warning/error level only (no per-request access log), defaults otherwise. Installs come from
bench/overhead/setup.sh.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from processes import Managed, ProcessSet, StartError, free_port, wait_http

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LITELLM_BIN = HERE / ".venv-litellm" / "bin" / "litellm"
PORTKEY_DIR = HERE / ".portkey" / "node_modules" / "@portkey-ai" / "gateway"
UPSTREAM_KEY = "sk-bench-not-a-secret"

TARGET_NAMES: tuple[str, ...] = ("direct", "tiergate", "tiergate-nocapture", "litellm", "portkey")
LABELS = {
    "direct": "direct (floor)",
    "tiergate": "tiergate",
    "tiergate-nocapture": "tiergate, capture off",
    "litellm": "LiteLLM proxy",
    "portkey": "Portkey",
}


@dataclass
class Context:
    """What every starter needs: where the upstream listens, which core gateways get, the run folder."""

    upstream_port: int
    gateway_core: int | None
    run_dir: Path
    start_timeout: float = 120.0


@dataclass
class Target:
    name: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    process: Managed | None = None
    version: str = ""
    ledger_db: Path | None = None
    start_s: float = 0.0

    @property
    def label(self) -> str:
        return LABELS.get(self.name, self.name)


def clean_env(**extra: str) -> dict[str, str]:
    """The parent's environment less anything that would point a gateway elsewhere or add auth."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIERGATE_", "LITELLM_", "OPENAI_"))}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env.update(extra)
    return env


def direct(ctx: Context) -> Target:
    return Target(
        "direct",
        f"http://127.0.0.1:{ctx.upstream_port}/v1/chat/completions",
        {"Authorization": f"Bearer {UPSTREAM_KEY}"},
        version="bench/overhead/upstream.py",
    )


def tiergate_command() -> list[str]:
    found = shutil.which("tiergate")
    if found:
        return [found]
    # editable installs without the console script on PATH still have the module
    return [
        sys.executable,
        "-c",
        "import sys; from gateway.cli import main; sys.argv[0] = 'tiergate'; sys.exit(main())",
    ]


def start_tiergate(procs: ProcessSet, ctx: Context, name: str = "tiergate", capture: bool = True) -> Target:
    """tiergate with its shipped defaults (transcript capture on), or with `defaults: {capture: false}`."""
    port = free_port()
    db = ctx.run_dir / f"{name}.sqlite"
    config = HERE / "tiergate.yaml"
    if not capture:
        config = ctx.run_dir / f"{name}.yaml"
        config.write_text((HERE / "tiergate.yaml").read_text() + "\ndefaults:\n  capture: false\n")
    env = clean_env(
        TIERGATE_BENCH_UPSTREAM_PORT=str(ctx.upstream_port),
        TIERGATE_BENCH_DB_URL=f"sqlite:///{db}",
        TIERGATE_BENCH_UPSTREAM_KEY=UPSTREAM_KEY,
        TIKTOKEN_CACHE_DIR=_tiktoken_dir(),
    )
    argv = tiergate_command() + ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    managed = procs.start(name, argv, ctx.gateway_core, env=env, cwd=REPO)
    waited = wait_http(f"http://127.0.0.1:{port}/healthz", managed, ctx.start_timeout)
    return Target(
        "tiergate" if capture else "tiergate-nocapture",
        f"http://127.0.0.1:{port}/v1/chat/completions",
        {},
        managed,
        version=_tiergate_version(),
        ledger_db=db,
        start_s=waited,
    )


def start_tiergate_nocapture(procs: ProcessSet, ctx: Context) -> Target:
    return start_tiergate(procs, ctx, name="tiergate-nocapture", capture=False)


def start_litellm(procs: ProcessSet, ctx: Context) -> Target:
    if not LITELLM_BIN.exists():
        raise StartError(
            f"LiteLLM proxy is not installed at `{LITELLM_BIN}`; run `bash bench/overhead/setup.sh`"
        )
    port = free_port()
    config = ctx.run_dir / "litellm.yaml"
    # JSON is YAML; the proxy's own config format, no DB and no master key (no auth, no spend logs)
    config.write_text(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": "bench-model",
                        "litellm_params": {
                            "model": "openai/gpt-4o-mini",
                            "api_base": f"http://127.0.0.1:{ctx.upstream_port}/v1",
                            "api_key": UPSTREAM_KEY,
                        },
                    }
                ],
                "litellm_settings": {"telemetry": False},
            },
            indent=2,
        )
    )
    env = clean_env(
        LITELLM_LOG="ERROR",  # also sets uvicorn's level: no access log, as for the others
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # no network here; don't try to fetch the price map
        LITELLM_MODE="PRODUCTION",
        DISABLE_SCHEMA_UPDATE="true",
    )
    argv = [
        str(LITELLM_BIN),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
        "--telemetry",
        "False",
    ]
    managed = procs.start("litellm", argv, ctx.gateway_core, env=env, cwd=ctx.run_dir)
    waited = wait_http(f"http://127.0.0.1:{port}/health/liveliness", managed, ctx.start_timeout)
    return Target(
        "litellm",
        f"http://127.0.0.1:{port}/v1/chat/completions",
        {"Authorization": "Bearer sk-anything"},
        managed,
        version=f"litellm[proxy] {_venv_version()}",
        start_s=waited,
    )


def start_portkey(procs: ProcessSet, ctx: Context) -> Target:
    entry = PORTKEY_DIR / "build" / "start-server.js"
    if not entry.exists():
        raise StartError(
            f"Portkey gateway is not installed at `{PORTKEY_DIR}`; run `bash bench/overhead/setup.sh`"
        )
    node = shutil.which("node")
    if node is None:
        raise StartError("`node` is not on PATH; the Portkey gateway needs Node.js (apt-get install nodejs)")
    port = free_port()
    env = clean_env(NODE_ENV="production")
    managed = procs.start(
        "portkey",
        [node, str(entry), f"--port={port}", "--headless"],
        ctx.gateway_core,
        env=env,
        cwd=ctx.run_dir,
    )
    waited = wait_http(f"http://127.0.0.1:{port}/", managed, ctx.start_timeout)
    version = json.loads((PORTKEY_DIR / "package.json").read_text())["version"]
    return Target(
        "portkey",
        f"http://127.0.0.1:{port}/v1/chat/completions",
        {
            "Authorization": f"Bearer {UPSTREAM_KEY}",
            "x-portkey-provider": "openai",
            # loopback is on Portkey's default TRUSTED_CUSTOM_HOSTS list
            "x-portkey-custom-host": f"http://127.0.0.1:{ctx.upstream_port}/v1",
        },
        managed,
        version=f"@portkey-ai/gateway {version}",
        start_s=waited,
    )


def _tiktoken_dir() -> str:
    """litellm's bundled tiktoken files, so the gateway never tries to download them (no network here)."""
    spec = importlib.util.find_spec("litellm")  # found, not imported: importing litellm takes seconds
    if spec is None or spec.origin is None:
        return os.environ.get("TIKTOKEN_CACHE_DIR", "")
    return str(Path(spec.origin).parent / "litellm_core_utils" / "tokenizers")


def _tiergate_version() -> str:
    try:
        from importlib.metadata import version

        return f"tiergate {version('tiergate')}"
    except Exception:  # noqa: BLE001 - a label only
        return "tiergate (working tree)"


def _venv_version() -> str:
    dist = list((HERE / ".venv-litellm" / "lib").glob("python*/site-packages/litellm-*.dist-info"))
    return dist[0].name.removeprefix("litellm-").removesuffix(".dist-info") if dist else "?"
