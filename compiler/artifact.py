"""The compiled artifact: a Hugging Face model folder plus ``manifest.json``, written only past the gate.

    path = write_artifact(model_dir, out / "artifact", manifest, report)   # raises GateFailed otherwise

A failed gate leaves no model folder behind to be served by mistake; ``write_gate_failure`` writes the
report that says why instead. The manifest carries what the gateway and a reviewer need to trust the
weights: workflow, flowchart hash, base model, data counts, coverage, eval results, created time and the
compile config's hash.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .evaluate import EvalReport, report_markdown

MANIFEST = "manifest.json"
GATE_REPORT = "gate-report.md"


class GateFailed(RuntimeError):
    """The eval gate did not pass, so no artifact was written; ``reasons`` lists each failed threshold."""

    def __init__(self, reasons: list[str], report_path: Path | None = None) -> None:
        self.reasons = reasons
        self.report_path = report_path
        where = f" (see `{report_path}`)" if report_path else ""
        super().__init__("eval gate failed, no artifact written" + where + ": " + " ".join(reasons))


@dataclass
class Manifest:
    workflow: str
    flowchart_hash: str
    base_model: str
    data: dict[str, Any]
    coverage: dict[str, Any]
    eval: dict[str, Any]
    config_hash: str
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    system_prompt: str = ""
    tools: list[dict[str, Any]] = field(default_factory=list)
    # vLLM's `--tool-call-parser` for the template's tool-call format (None: the workflow calls no tools)
    tool_call_parser: str | None = None
    end_of_turn: str = ""
    format: str = "tiergate-compiled/1"


def tool_call_parser(tokenizer: Any) -> str | None:
    """The serving parser the artifact's template needs, or None when its template renders no tool calls."""
    from .toolcalls import tool_format_of, vllm_parser

    fmt = tool_format_of(tokenizer.chat_template)
    return vllm_parser(fmt) if fmt else None


def check_tool_roundtrip(folder: str | Path) -> str | None:
    """Before a canary (and at write time): the artifact's template renders a call its parser reads back.

        check_tool_roundtrip("build/travel/artifact")   # "hermes", or raises ToolFormatError

    Returns the vLLM parser name, None for a workflow without tools; raises ``ToolFormatError`` otherwise
    (``TemplateError`` when the folder lost its chat template).
    """
    from transformers import AutoTokenizer

    from .toolcalls import roundtrip_check, tool_format_of

    path = Path(folder)
    tools: list[dict[str, Any]] = []
    if (path / MANIFEST).is_file():
        tools = list(json.loads((path / MANIFEST).read_text()).get("tools") or [])
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if not tokenizer.chat_template:  # saving has been known to drop it; serving would then prompt in no format
        from .templates import TemplateError

        raise TemplateError(f"`{path}` has no chat template after saving; its tokenizer files are incomplete.")
    fmt = tool_format_of(tokenizer.chat_template)
    if fmt is None:
        if tools:
            from .toolcalls import ToolFormatError

            raise ToolFormatError(
                f"`{path}` has tools but its chat template renders no tool calls tiergate parses; recompile with a "
                "template that renders Hermes `<tool_call>` blocks."
            )
        return None
    return roundtrip_check(tokenizer, tools, fmt)


def write_artifact(model_dir: str | Path, out_dir: str | Path, manifest: Manifest, report: EvalReport) -> Path:
    """Copy the trained weights + tokenizer to ``out_dir`` and add the manifest; only when ``report.passed``."""
    out = Path(out_dir)
    if not report.passed:
        raise GateFailed(report.reasons)
    src = Path(model_dir)
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"trained model folder `{src}` has no config.json; train before packaging.")
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    (tmp / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2, default=str))
    try:
        check_tool_roundtrip(tmp)  # what is written is what serves: refuse an artifact whose calls cannot be read
    except ValueError:
        shutil.rmtree(tmp)
        raise
    (tmp / "eval-report.md").write_text(report_markdown(report, f"Eval gate for `{manifest.workflow}`"))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)  # a reader never sees a half-copied artifact
    return out


def write_gate_failure(out_dir: str | Path, manifest: Manifest, report: EvalReport) -> Path:
    """The report a failed gate leaves in place of the artifact (and any stale artifact is removed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / GATE_REPORT
    body = report_markdown(report, f"Eval gate for `{manifest.workflow}`")
    body += "\nNo artifact was written. Manifest it would have carried:\n\n```json\n"
    body += json.dumps(asdict(manifest) | {"tools": len(manifest.tools)}, indent=2, default=str) + "\n```\n"
    path.write_text(body)
    return path


def read_manifest(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"`{folder}` holds no {MANIFEST}; pass a folder written by `tiergate compile`.")
    data: Mapping[str, Any] = json.loads(path.read_text())
    return dict(data)


def resolve_artifact(folder: str | Path) -> Path:
    """Accept the artifact folder itself or the compile output folder holding ``artifact/``."""
    p = Path(folder)
    if (p / MANIFEST).is_file() or (p / "config.json").is_file():
        return p
    if (p / "artifact" / "config.json").is_file():
        return p / "artifact"
    if (p / GATE_REPORT).is_file():
        raise FileNotFoundError(
            f"`{p}` holds no artifact: its eval gate failed (see `{p / GATE_REPORT}`); fix and recompile."
        )
    raise FileNotFoundError(f"`{p}` is not a compiled model folder; pass the `--out` folder of `tiergate compile`.")
