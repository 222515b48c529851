"""A real pretrained-style base (tiny random Qwen2, local tokenizer, Qwen 2.5's template without generation
markers) through the whole compile: its own template, a computed assistant mask, Hermes tool calls from
the training targets to the built-in server's `tool_calls`, per-base hyperparameters."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("trl", reason="the `compile` extra (torch, transformers, trl) is needed")

from tiny_qwen import QWEN25_TEMPLATE, build_tiny_qwen, train_qwen_tokenizer  # noqa: E402

from compiler.config import TrainConfig  # noqa: E402
from compiler.templates import (  # noqa: E402
    CHATML_TEMPLATE,
    TemplateError,
    chat_messages,
    check_mask,
    end_of_turn,
    render,
    resolve_chat_template,
    tokenize_conversation,
)
from compiler.toolcalls import ToolFormatError, parse_assistant_text, roundtrip_check  # noqa: E402
from compiler.train import FINETUNE_LEARNING_RATE, SCRATCH_LEARNING_RATE, hyperparameters  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WEATHER_CHART = Path(__file__).with_name("weather.yaml")
# as conftest's WEATHER_OVERRIDES (3 paths, the 1-failure path held out), with the gate opened: a random
# 2-layer model trained 80 steps is what this test runs, and the gate is not what it is about
COMPILE_SETS = {
    "data.max_loops": 2, "data.eval_share": 0.34, "data.seed": 5, "data.variants_per_path": 16,
    "data.eval_variants_per_path": 10, "train.max_steps": 80, "train.batch_size": 8, "train.eval_steps": 40,
    "train.logging_steps": 10, "train.learning_rate": 0.004, "gate.max_new_tokens": 40,
    "gate.min_node_accuracy": 0, "gate.min_success_rate": 0,
}


def _weather_rows(variants: int = 3) -> list[dict[str, Any]]:
    from compiler.formats import load_flowchart
    from compiler.paths import enumerate_paths
    from compiler.render import render_offline

    fc = load_flowchart(WEATHER_CHART)
    return [render_offline(fc, p, seed=0, variant=v) for p in enumerate_paths(fc, max_loops=2).paths
            for v in range(variants)]


def _texts(rows: list[dict[str, Any]]) -> list[str]:
    from compiler.scratch import conversation_texts

    return [t for r in rows for t in conversation_texts(r)]


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return _weather_rows()


@pytest.fixture(scope="module")
def qwen_tok(rows: list[dict[str, Any]]) -> Any:
    return train_qwen_tokenizer(_texts(rows))


def _segments(tok: Any, ids: list[int], mask: list[int]) -> list[str]:
    out, cur = [], []
    for i, m in zip(ids, mask, strict=True):
        if m:
            cur.append(i)
        elif cur:
            out.append(tok.decode(cur))
            cur = []
    if cur:
        out.append(tok.decode(cur))
    return out


def test_mask_covers_exactly_the_assistant_turns_and_their_end_token(qwen_tok: Any,
                                                                     rows: list[dict[str, Any]]) -> None:
    assert "{% generation %}" not in QWEN25_TEMPLATE  # TRL's own assistant-only loss would refuse this template
    row = next(r for r in rows if sum(1 for m in r["messages"] if m.get("tool_calls")) >= 2)
    messages, tools = chat_messages(row)
    ids, mask = tokenize_conversation(qwen_tok, messages, tools)
    check_mask(ids, mask, qwen_tok.convert_tokens_to_ids("<|im_end|>"), "row")
    want = []
    for m in messages:
        if m["role"] != "assistant":
            continue
        if m.get("tool_calls"):
            body = "".join(
                f'<tool_call>\n{{"name": "{c["function"]["name"]}", "arguments": '
                f'{json.dumps(c["function"]["arguments"])}}}\n</tool_call>' for c in m["tool_calls"])
            want.append(body + "<|im_end|>")
        else:
            want.append(m["content"] + "<|im_end|>")
    assert _segments(qwen_tok, ids, mask) == want
    # the rendered targets hold arguments as JSON objects, not strings of strings
    text = render(qwen_tok, messages, tools)
    assert '"arguments": {"city": "Oslo"}' in text and '\\"city\\"' not in text
    # the stored rows hold OpenAI wire strings: fed to the template as they are, `tojson` would nest them
    stored = next(c for m in row["messages"] for c in m.get("tool_calls") or [])["function"]["arguments"]
    assert isinstance(stored, str)
    assert '"arguments": "{\\"city\\"' in render(qwen_tok, row["messages"], tools)


def test_mask_check_refuses_all_zero_all_one_and_a_missing_end_token() -> None:
    with pytest.raises(TemplateError, match="all zero"):
        check_mask([1, 2, 3], [0, 0, 0], 3, "row 0")
    with pytest.raises(TemplateError, match="all one"):
        check_mask([1, 2, 3], [1, 1, 1], 3, "row 0")
    with pytest.raises(TemplateError, match="end-of-turn"):
        check_mask([1, 2, 3], [0, 1, 0], 3, "row 0")
    check_mask([1, 2, 3], [0, 1, 1], 3, "row 0")


def test_a_base_without_a_template_gets_chatml_or_a_refusal(rows: list[dict[str, Any]]) -> None:
    bare = train_qwen_tokenizer(_texts(rows), template=None)
    assert resolve_chat_template(bare, "qwen-base") == CHATML_TEMPLATE
    bare.chat_template = CHATML_TEMPLATE
    assert end_of_turn(bare) == "<|im_end|>"
    assert roundtrip_check(bare, rows[0]["tools"]) == "hermes"
    messages, tools = chat_messages(rows[1])
    ids, mask = tokenize_conversation(bare, messages, tools)
    assert _segments(bare, ids, mask)[0] == "Hello! Which city do you want the weather for?<|im_end|>"

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel()
    raw.train_from_iterator(["plain text only"], trainers.BpeTrainer(special_tokens=["</s>"], show_progress=False))
    plain = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>")
    with pytest.raises(TemplateError, match="add a `chat_template`"):
        resolve_chat_template(plain, "gpt-like")


def test_roundtrip_check_refuses_a_template_the_parser_cannot_read(qwen_tok: Any) -> None:
    tools = [{"type": "function", "function": {"name": "book", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "nights": {"type": "integer"}}}}}]
    assert roundtrip_check(qwen_tok, tools) == "hermes"
    # the old scratch format (`<tool_call>name {json}</tool_call>`): no vLLM parser reads it, nor ours
    old = QWEN25_TEMPLATE.replace("""{{- '\\n<tool_call>\\n{"name": "' }}""", "{{- '\\n<tool_call>' }}").replace(
        """{{- '", "arguments": ' }}""", "{{- ' ' }}").replace("""{{- '}\\n</tool_call>' }}""", "{{- '</tool_call>' }}")
    assert old != QWEN25_TEMPLATE
    qwen_tok.chat_template = old
    try:
        with pytest.raises(ToolFormatError, match="round trip failed"):
            roundtrip_check(qwen_tok, tools)
    finally:
        qwen_tok.chat_template = QWEN25_TEMPLATE


def test_hyperparameters_follow_the_base() -> None:
    scratch = hyperparameters(TrainConfig(base_model="scratch:tiny"), cuda=True)
    assert scratch.learning_rate == SCRATCH_LEARNING_RATE and not scratch.gradient_checkpointing and scratch.bf16
    tuned = hyperparameters(TrainConfig(base_model="/models/qwen"), cuda=True)
    assert tuned.learning_rate == FINETUNE_LEARNING_RATE and 1e-5 <= tuned.learning_rate <= 2e-5
    assert tuned.gradient_checkpointing and tuned.bf16
    assert not hyperparameters(TrainConfig(base_model="/models/qwen"), cuda=True, fsdp=True).gradient_checkpointing
    cpu = hyperparameters(TrainConfig(base_model="/models/qwen", learning_rate=3e-5), cuda=False)
    assert cpu.learning_rate == 3e-5 and not cpu.gradient_checkpointing and not cpu.bf16  # a chosen rate wins
    # a rate equal to the scratch default, set on purpose, is used as set (it used to be taken as "unset")
    assert hyperparameters(TrainConfig(base_model="/models/qwen", learning_rate=5e-3), cuda=False).learning_rate == 5e-3
    # configs/compile.yaml applies to every base: it leaves the rate to the base; any value there would
    # full-fine-tune a pretrained model at a scratch rate
    import yaml

    shipped = (yaml.safe_load((ROOT / "configs" / "compile.yaml").read_text()) or {}).get("train") or {}
    assert shipped.get("learning_rate") is None


# ---- the whole compile of a tiny Qwen2 folder, then serve-model driven by the openai SDK ----

@pytest.fixture(scope="module")
def qwen_compile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import typer
    from typer.testing import CliRunner

    from compiler.cli import register

    tmp = tmp_path_factory.mktemp("qwen-compile")
    folder = build_tiny_qwen(tmp / "qwen2-tiny", _texts(_weather_rows()))
    out = tmp / "out"
    app = typer.Typer()
    register(app)
    empty = tmp / "compile.yaml"
    empty.write_text("{}\n")
    args = ["compile", str(WEATHER_CHART), "--out", str(out), "--base-model", str(folder), "--config", str(empty)]
    for k, v in COMPILE_SETS.items():
        args += ["--set", f"{k}={v}"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return {"folder": folder, "out": out, "artifact": out / "artifact", "output": res.output}


def test_compile_keeps_the_base_template_and_writes_greedy_hermes_defaults(qwen_compile: dict[str, Any]) -> None:
    from transformers import AutoTokenizer

    art = qwen_compile["artifact"]
    tok = AutoTokenizer.from_pretrained(art)
    assert tok.chat_template == QWEN25_TEMPLATE  # survived training, save and load
    assert (art / "chat_template.jinja").is_file()
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["tool_call_parser"] == "hermes" and manifest["end_of_turn"] == "<|im_end|>"
    meta = json.loads((art / "train_meta.json").read_text())["result"]
    assert meta["learning_rate"] == 0.004 and meta["end_of_turn"] == "<|im_end|>"
    gen = json.loads((art / "generation_config.json").read_text())
    assert gen["do_sample"] is False and "temperature" not in gen and "repetition_penalty" not in gen
    assert gen["eos_token_id"] == tok.convert_tokens_to_ids("<|im_end|>")
    # what training saw: Qwen's template, arguments as objects, the mask on assistant turns only
    rows = [json.loads(x) for x in (qwen_compile["out"] / "data" / "train.jsonl").read_text().splitlines()]
    row = next(r for r in rows if any(m.get("tool_calls") for m in r["messages"]))
    messages, tools = chat_messages(row)
    ids, mask = tokenize_conversation(tok, messages, tools)
    segs = _segments(tok, ids, mask)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>' in segs
    assert all(s.endswith("<|im_end|>") and "<|im_start|>" not in s for s in segs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def qwen_server(qwen_compile: dict[str, Any]) -> Iterator[str]:
    port = _free_port()
    log = qwen_compile["out"] / "serve.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from compiler.cli import main; main()", "serve-model", str(qwen_compile["out"]),
             "--port", str(port), "--backend", "cpu"],
            cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=os.environ | {"OMP_NUM_THREADS": "1"},
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"server exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"server not healthy in 120 s: {log.read_text()[-2000:]}"
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_serve_model_returns_structured_tool_calls_from_a_qwen_base(qwen_compile: dict[str, Any],
                                                                     qwen_server: str) -> None:
    openai = pytest.importorskip("openai", reason="the official openai SDK drives the server")
    client = openai.OpenAI(base_url=f"{qwen_server}/v1", api_key="unused", max_retries=0, timeout=60)
    rows = [json.loads(x) for x in (qwen_compile["out"] / "data" / "train.jsonl").read_text().splitlines()]
    row = next(r for r in rows if any(m.get("tool_calls") for m in r["messages"]))
    k = next(i for i, m in enumerate(row["messages"]) if m.get("tool_calls"))
    history = [{"role": m["role"], "content": m["content"]} for m in row["messages"][:k]]  # a trained prefix
    tools = row["tools"]

    resp = client.chat.completions.create(model="weather", messages=history, tools=tools)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}
    assert choice.message.content is None

    calls: list[Any] = []
    text, finish = "", None
    for chunk in client.chat.completions.create(model="weather", messages=history, tools=tools, stream=True):
        if chunk.choices:
            calls += chunk.choices[0].delta.tool_calls or []
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and "<tool_call>" not in text
    assert calls[0].function.name == "get_weather" and json.loads(calls[0].function.arguments) == {"city": "Oslo"}


def test_parser_reads_hermes_output_with_and_without_newlines() -> None:
    for text in ('<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>',
                 '<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call><|im_end|>ignored',
                 '<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>'):
        msg = parse_assistant_text(text, ["<|im_end|>"])
        assert msg["content"] is None
        assert msg["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a": 1}'}
    broken = parse_assistant_text('<tool_call>{"name": "f", "arguments": {"a": 1</tool_call>')
    assert broken["tool_calls"][0]["function"]["name"] == "f"  # kept, and counted wrong by the gate
    assert parse_assistant_text("It is 21 degrees.", []) == {"role": "assistant", "content": "It is 21 degrees."}
    assert parse_assistant_text("It is<|im_start|> 21.<|im_end|>x", ["<|im_end|>"], ["<|im_start|>"])["content"] \
        == "It is 21."


def test_prompts_hold_earlier_calls_as_objects_as_in_training(qwen_tok: Any, rows: list[dict[str, Any]]) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from compiler.simulate import ModelPolicy

    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(qwen_tok), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    policy = ModelPolicy(model, qwen_tok)
    row = next(r for r in rows if any(m.get("tool_calls") for m in r["messages"]))
    k = next(i for i, m in enumerate(row["messages"]) if m.get("tool_calls"))
    history = row["messages"][: k + 2]  # through the call (arguments a JSON string, as clients send) and its result
    assert isinstance(history[k]["tool_calls"][0]["function"]["arguments"], str)
    prompt = qwen_tok.decode(policy.prompt_ids(history, row["tools"]))
    messages, tools = chat_messages({"messages": history, "tools": row["tools"]})
    assert prompt == render(qwen_tok, messages, tools, generation_prompt=True)  # the training rendering
    assert '"arguments": {"city": "Oslo"}' in prompt
    assert policy.stop_ids == {qwen_tok.convert_tokens_to_ids("<|im_end|>")}


def test_compile_refuses_a_base_it_cannot_template_before_rendering(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    import typer
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
    from typer.testing import CliRunner

    from compiler.cli import register

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel()
    raw.train_from_iterator(_texts(rows), trainers.BpeTrainer(special_tokens=["</s>"], show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>")  # a GPT-style base: no template
    folder = tmp_path / "gpt-like"
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(folder)
    tok.save_pretrained(folder)
    app = typer.Typer()
    register(app)
    empty = tmp_path / "compile.yaml"
    empty.write_text("{}\n")
    res = CliRunner().invoke(app, ["compile", str(WEATHER_CHART), "--out", str(tmp_path / "out"), "--base-model",
                                   str(folder), "--config", str(empty)])
    assert res.exit_code == 2
    assert "has no chat template and no ChatML tokens" in res.stderr and "add a `chat_template`" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output
    assert not (tmp_path / "out" / "data").exists()  # refused before any conversation was rendered

    # the same folder with a template whose turns do not end in a special token: refused, naming why
    tok.chat_template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    tok.save_pretrained(folder)
    res = CliRunner().invoke(app, ["compile", str(WEATHER_CHART), "--out", str(tmp_path / "out"), "--base-model",
                                   str(folder), "--config", str(empty)])
    assert res.exit_code == 2 and "would never stop" in res.stderr
