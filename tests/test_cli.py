"""`tiergate workflows`, `--help` on every command, and token counting with no network."""

from __future__ import annotations

import os
import subprocess
import sys

import openai
from tg_testing import ROOT


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=120,
    )


def test_workflows_table_matches_the_ledger(start_gateway):
    gw = start_gateway()
    c = openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0)
    for i in range(2):
        c.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": f"x{i}"}],
            extra_headers={"X-Tiergate-Workflow": "booking"},
        )
    gw.stop()
    out = cli("workflows", "--config", str(gw.config_path))
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if "booking" in ln)
    cells = [c.strip() for c in line.strip("│ ").split("│")]
    assert cells[0] == "booking" and cells[1] == "2" and cells[2] == "2"


def test_help_for_each_gateway_command():
    for args in (["--help"], ["serve", "--help"], ["workflows", "--help"]):
        out = cli(*args)
        assert out.returncode == 0 and "Usage" in out.stdout


def test_tiktoken_counts_offline_without_a_download(tmp_path):
    """With no cache configured and no network, counting must still work from the bundled files."""
    code = (
        "import os, socket\n"
        "def refuse(*a, **k): raise OSError('network disabled in this test')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "os.environ.pop('TIKTOKEN_CACHE_DIR', None)\n"
        "from gateway.proxy.tokens import count_text, count_prompt_tokens\n"
        "print(count_text('gpt-4o', 'hello world'), count_text('gpt-4', 'hello world'),"
        " count_prompt_tokens('claude-sonnet-4-5', [{'role': 'user', 'content': 'hi'}]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")}
    env["HOME"] = str(tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "2", "7"]
