"""`tiergate compile` under `accelerate launch` with two processes on CPU (gloo): every rank trains, the
data is rendered once and the gate and the artifact run on the main process only."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHART = Path(__file__).with_name("weather.yaml")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_process_compile_renders_and_writes_the_artifact_once(tmp_path: Path) -> None:
    pytest.importorskip("trl", reason="the `compile` extra (torch, transformers, trl) is needed to train")
    tiergate = Path(sys.executable).with_name("tiergate")
    accelerate = Path(sys.executable).with_name("accelerate")
    assert tiergate.is_file() and accelerate.is_file(), "install the package: pip install -e '.[dev,compile]'"
    out = tmp_path / "out"
    config = tmp_path / "compile.yaml"
    config.write_text("{}\n")
    sets = {"data.variants_per_path": 4, "data.eval_variants_per_path": 2, "train.base_model": "scratch:micro",
            "train.max_tokens": 3000, "train.batch_size": 2, "train.eval_steps": 2, "train.logging_steps": 1,
            "train.vocab_size": 300, "gate.max_new_tokens": 8, "gate.min_node_accuracy": 0,
            "gate.min_success_rate": 0}
    # `--multi_gpu` picks torch's distributed launcher; with no GPU visible each rank runs on the CPU (gloo)
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           str(tiergate), "compile", str(CHART), "--out", str(out), "--config", str(config)]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    env = os.environ | {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]

    meta = json.loads((out / "artifact" / "train_meta.json").read_text())["result"]
    assert meta["world_size"] == 2  # both ranks trained together
    # the token budget counts what both ranks read: half the steps one process would take
    from transformers import AutoTokenizer

    from compiler.budget import steps_for_tokens
    from compiler.train import read_jsonl, tokenize_rows

    tok = AutoTokenizer.from_pretrained(out / "artifact")
    lengths = [len(x) for x in tokenize_rows(tok, read_jsonl(out / "data" / "train.jsonl"), "<|end|>", "t")["input_ids"]]
    assert meta["steps"] == steps_for_tokens(3000, lengths, 2 * 2) < steps_for_tokens(3000, lengths, 2)
    assert log.count("paths 3 (") == 1  # the conversations were rendered by one process
    assert log.count("gate passed: artifact at") == 1 and log.count("artifact: ") == 1  # one gate, one artifact
    assert json.loads((out / "artifact" / "manifest.json").read_text())["tool_call_parser"] == "hermes"
    assert not list(out.glob("artifact.partial*"))


def test_accelerate_configs_save_whole_weights() -> None:
    pytest.importorskip("accelerate", reason="the `compile` extra is needed")
    from accelerate.commands.config.config_args import load_config_from_file

    fsdp = load_config_from_file(str(ROOT / "configs" / "accelerate" / "fsdp.yaml"))
    # a sharded state dict leaves the trained model folder without weights
    assert fsdp.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    assert fsdp.fsdp_config["fsdp_cpu_ram_efficient_loading"] is True
    assert fsdp.fsdp_config["fsdp_activation_checkpointing"] is True  # compile turns the trainer's off under FSDP
    for name in ("deepspeed-zero3.yaml", "deepspeed-zero3-multinode.yaml"):
        ds = load_config_from_file(str(ROOT / "configs" / "accelerate" / name)).deepspeed_config
        assert ds["zero_stage"] == 3 and ds["zero3_init_flag"] is True and ds["zero3_save_16bit_model"] is True
