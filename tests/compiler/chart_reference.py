"""The reference parsers the importer tests compare against: Mermaid's own and Graphviz.

Mermaid runs under Node from ``tests/compiler/oracle`` (``npm ci`` there installs the
pinned ``mermaid`` and ``jsdom``); Graphviz is Debian's ``dot`` (``dot -Tjson``). Each
call handles a whole corpus in one process, so the differential tests stay fast. When a
tool is missing the test skips with the reason, except under TIERGATE_REQUIRE_SERVICES=1
(CI), where a missing reference tool fails the suite instead.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tg_testing import service_missing

ORACLE = Path(__file__).resolve().parent / "oracle"


def mermaid_reference(charts: list[str]) -> list[dict[str, Any]]:
    """Per chart: ``{"error": ...}`` or Mermaid's nodes (ordered pairs) and edges."""
    node = shutil.which("node")
    if node is None:
        service_missing("Node.js (`node`)", "not on PATH; install Debian's `nodejs`")
    if not (ORACLE / "node_modules" / "mermaid").is_dir():
        service_missing("Mermaid's parser", "run `npm ci` in tests/compiler/oracle")
    done = subprocess.run(
        [str(node), str(ORACLE / "mermaid_graph.mjs")],
        input=json.dumps(charts),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ORACLE,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the Mermaid oracle failed: {done.stderr[-2000:]}")
    out: list[dict[str, Any]] = json.loads(done.stdout)
    assert len(out) == len(charts)
    return out


def graphviz_reference(charts: list[str]) -> list[dict[str, Any]]:
    """Per chart: ``{"error": ...}`` or Graphviz's parsed graph (``dot -Tjson``), one `dot` run in all."""
    dot = shutil.which("dot")
    if dot is None:
        service_missing("Graphviz (`dot`)", "not on PATH; install Debian's `graphviz`")
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, text in enumerate(charts):
            f = Path(tmp) / f"chart{i:04d}.gv"
            f.write_text(text, encoding="utf-8")
            files.append(f)
        # -O writes chart0000.gv.json next to each input; a chart dot rejects gets no file.
        _run_dot(dot, files)
        missing = [f for f in files if not _output(f).exists()]
        for f in missing:  # once more one by one: the error text, and no chart lost to a crash
            _run_dot(dot, [f])
        out: list[dict[str, Any]] = []
        for f in files:
            js = _output(f)
            if js.exists() and js.stat().st_size:
                out.append(json.loads(js.read_text(encoding="utf-8")))
            else:
                err = f.with_name(f.name + ".err")
                out.append({"error": err.read_text() if err.exists() else "rejected"})
    return out


def _output(f: Path) -> Path:
    return f.with_name(f.name + ".json")


def _run_dot(dot: str, files: list[Path]) -> None:
    # In the temporary folder: on a chart it rejects, dot also writes a stray `noname.gv.xdot` to its cwd.
    done = subprocess.run(
        [dot, "-Tjson", "-O", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=files[0].parent,
        stdin=subprocess.DEVNULL,
    )
    if len(files) == 1:
        files[0].with_name(files[0].name + ".err").write_text(done.stderr.strip() or f"exit {done.returncode}")
        if done.returncode != 0:
            _output(files[0]).unlink(missing_ok=True)  # a partial file from a chart dot rejected
