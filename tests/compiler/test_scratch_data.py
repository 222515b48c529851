"""What makes a scratch compile independent of the seed: data without the per-list shortcut, a tokenizer
whose slot values copy in one step, and a training budget in tokens that may stop early."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from compiler.formats import load_flowchart
from compiler.paths import enumerate_paths
from compiler.render import pick_slots, render_offline

ROOT = Path(__file__).resolve().parents[2]
TRAVEL = ROOT / "configs" / "workflows" / "travel-booking.yaml"
WEATHER = Path(__file__).with_name("weather.yaml")


def _travel_rows(n: int = 300) -> list[dict]:
    fc = load_flowchart(TRAVEL)
    paths = enumerate_paths(fc, max_loops=1).paths
    return [render_offline(fc, paths[i % len(paths)], seed=3, variant=i) for i in range(n)]


def test_slots_sharing_one_list_get_distinct_values() -> None:
    fc = load_flowchart(TRAVEL)
    assert fc.slots["origin"] == fc.slots["city"], "travel-booking draws both ends of a trip from one list"
    rng = random.Random(0)
    draws = [pick_slots(fc, rng) for _ in range(400)]
    assert all(d["origin"] != d["city"] for d in draws)
    # every city turns up on both ends, so the list a city is in says nothing about its role
    assert {d["origin"] for d in draws} == {d["city"] for d in draws} == set(fc.slots["city"])


def test_charts_without_shared_lists_draw_as_before() -> None:
    fc = load_flowchart(WEATHER)
    assert len({tuple(v) for v in fc.slots.values()}) == len(fc.slots)
    for seed in range(20):
        legacy = random.Random(seed)
        assert pick_slots(fc, random.Random(seed)) == {k: legacy.choice(v) for k, v in fc.slots.items()}


def test_scratch_tokenizer_copies_values_in_one_step() -> None:
    pytest.importorskip("tokenizers")
    from compiler.scratch import train_tokenizer

    rows = _travel_rows()
    tok = train_tokenizer(rows, vocab_size=1024)
    conv = next(r for r in rows if any(m.get("tool_calls") for m in r["messages"]))
    slots = conv["tiergate"]["slots"]
    text = tok.apply_chat_template(conv["messages"], tools=conv["tools"], tokenize=False)
    pieces = [tok.decode([i]) for i in tok(text, add_special_tokens=False)["input_ids"]]
    # the destination is one token, the same in the user's sentence and in the JSON arguments, and the
    # token before it in the sentence is the cue that says which slot it is
    dest = slots["city"]
    where = [i for i, p in enumerate(pieces) if p == dest]
    assert len(where) >= 2, pieces
    assert pieces[where[0] - 1].endswith(" to ")
    assert any(pieces[i - 1].endswith('"destination": "') for i in where)
    # no lone spaces between words (they were 28% of tokens), and template phrases merge
    lone = sum(1 for p in pieces if p == " ") / len(pieces)
    assert lone < 0.1, lone
    assert len(pieces) < len(text) / 4


def test_split_digits_makes_every_digit_a_token_of_its_own() -> None:
    pytest.importorskip("tokenizers")
    from compiler.scratch import train_tokenizer

    rows = _travel_rows()
    text = "Order A39793 for ada12@example.com on SK214"
    merged = train_tokenizer(rows, vocab_size=1024).tokenize(text)
    split = train_tokenizer(rows, vocab_size=1024, split_digits=True).tokenize(text)
    assert any(sum(c.isdigit() for c in p) > 1 for p in merged), merged  # BPE merges digits by default
    assert all(sum(c.isdigit() for c in p) <= 1 for p in split), split
    assert [p for p in split if p.isdigit()] == list("397931" "2" "214")


def test_token_budget_turns_into_steps() -> None:
    from compiler.budget import apply_budget, steps_for_tokens, tokens_per_step

    assert tokens_per_step([200, 300], batch_size=8, grad_accum=2) == 4000
    assert steps_for_tokens(400_000, [250] * 10, batch_size=8) == 200
    assert steps_for_tokens(1, [250], batch_size=8) == 1
    cfg = SimpleNamespace(max_tokens=100_000, batch_size=4, grad_accum=1, warmup_ratio=0.1, eval_steps=250)
    args = SimpleNamespace(max_steps=1000, warmup_steps=50, eval_steps=250, save_steps=250)
    assert apply_budget(cfg, args, [250] * 8, 1000) == 100
    assert (args.max_steps, args.warmup_steps, args.eval_steps, args.save_steps) == (100, 10, 100, 100)
    off = SimpleNamespace(max_tokens=0)
    assert apply_budget(off, args, [250], 77) == 77


def test_early_stop_needs_two_checks_in_a_row_at_the_threshold() -> None:
    pytest.importorskip("transformers")
    from transformers import TrainerControl, TrainerState

    from compiler.budget import early_stop_callbacks

    assert early_stop_callbacks(SimpleNamespace(stop_eval_loss=None)) == []
    said: list[str] = []
    (cb,) = early_stop_callbacks(SimpleNamespace(stop_eval_loss=0.05), echo=said.append)
    state = TrainerState(global_step=40, max_steps=100)
    control = TrainerControl()
    for loss in (0.2, 0.05, 0.06, 0.04):  # a dip under the bar, back over it, under again: one in a row
        cb.on_evaluate(None, state, control, metrics={"eval_loss": loss})
        assert not control.should_training_stop and not said, loss
    cb.on_evaluate(None, state, control, metrics={})  # a log without a loss neither counts nor resets
    assert not control.should_training_stop
    cb.on_evaluate(None, state, control, metrics={"eval_loss": 0.05})
    assert control.should_training_stop and "step 40 of 100" in said[0] and "2 checks in a row" in said[0]
    (once,) = early_stop_callbacks(SimpleNamespace(stop_eval_loss=0.05), echo=said.append, checks=1)
    control = TrainerControl()
    once.on_evaluate(None, state, control, metrics={"eval_loss": 0.05})
    assert control.should_training_stop


class _FixedTurnModel:
    """Stands in for a causal LM: token 1 at probability ``p`` at every position (vocabulary of 4)."""

    training = True

    def __init__(self, p: float) -> None:
        self.p = p

    def eval(self) -> None:
        self.training = False

    def train(self, mode: bool = True) -> None:
        self.training = mode

    def __call__(self, input_ids: Any, **_: Any) -> Any:
        import torch

        probs = torch.full((*input_ids.shape, 4), (1 - self.p) / 3)
        probs[..., 1] = self.p
        return SimpleNamespace(logits=probs.log())


def test_early_stop_waits_until_every_held_out_turn_starts_right() -> None:
    pytest.importorskip("transformers")
    import torch
    from transformers import TrainerControl, TrainerState

    from compiler.budget import early_stop_callbacks, weakest_turn_start

    # two assistant turns (labels not -100) start at positions 2 and 5: only their first tokens count
    batch = {"input_ids": torch.tensor([[0, 0, 1, 1, 0, 1]]), "labels": torch.tensor([[-100, -100, 1, 1, -100, 1]])}
    assert weakest_turn_start(_FixedTurnModel(0.3), [batch]) == pytest.approx(0.3)
    model = _FixedTurnModel(0.9)
    assert weakest_turn_start(model, [batch]) == pytest.approx(0.9) and model.training, "training mode restored"
    said: list[str] = []
    (cb,) = early_stop_callbacks(SimpleNamespace(stop_eval_loss=0.05), echo=said.append)
    state, control = TrainerState(global_step=40, max_steps=100), TrainerControl()
    args = SimpleNamespace(world_size=1)
    for _ in range(3):  # the loss is under the bar, a held-out turn would go to the wrong node: training on
        cb.on_evaluate(args, state, control, metrics={"eval_loss": 0.01}, model=_FixedTurnModel(0.3),
                       eval_dataloader=[batch])
    assert not control.should_training_stop and "probability 0.30 < 0.5: training on" in said[-1]
    for _ in range(2):
        cb.on_evaluate(args, state, control, metrics={"eval_loss": 0.01}, model=_FixedTurnModel(0.9),
                       eval_dataloader=[batch])
    assert control.should_training_stop and "every held-out turn's first token >= 0.5" in said[-1]
    # under `accelerate launch` the ranks hold different held-out shards: the loss alone decides
    (cb,) = early_stop_callbacks(SimpleNamespace(stop_eval_loss=0.05), echo=said.append, checks=1)
    control = TrainerControl()
    cb.on_evaluate(SimpleNamespace(world_size=2), state, control, metrics={"eval_loss": 0.01},
                   model=_FixedTurnModel(0.3), eval_dataloader=[batch])
    assert control.should_training_stop


def test_budget_knobs_parse_from_the_command_line() -> None:
    from compiler.config import load_compile_config

    cfg = load_compile_config(None, {"train.max_tokens": "400000", "train.stop_eval_loss": "0.02"})
    assert (cfg.train.max_tokens, cfg.train.stop_eval_loss) == (400_000, 0.02)
    assert load_compile_config(None, {"train.stop_eval_loss": "none"}).train.stop_eval_loss is None
    assert json.dumps(cfg.to_dict())  # the config hash covers the new knobs


def test_scratch_models_start_mimetic() -> None:
    pytest.importorskip("transformers")
    import torch

    from compiler.scratch import build_model, train_tokenizer

    tok = train_tokenizer(_travel_rows(20), vocab_size=400)
    a, b = build_model("scratch:micro", tok, seed=1), build_model("scratch:micro", tok, seed=2)
    for layer in a.model.layers:
        attn = layer.self_attn
        assert torch.equal(attn.q_proj.weight, attn.k_proj.weight)
        assert torch.equal(attn.o_proj.weight, attn.v_proj.weight.t())
        # heads lean to similar tokens and write back what they read: both products are PSD
        ov = attn.o_proj.weight @ attn.v_proj.weight
        assert torch.linalg.eigvalsh((ov + ov.t()) / 2).min() > -1e-6
    assert not torch.equal(a.model.layers[0].self_attn.k_proj.weight, b.model.layers[0].self_attn.k_proj.weight)


@pytest.mark.slow
def test_training_reads_the_token_budget_and_stops_early(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("trl", reason="the `compile` extra (torch, transformers, trl) is needed to train")
    from compiler import budget
    from compiler.budget import steps_for_tokens
    from compiler.config import TrainConfig
    from compiler.paths import enumerate_paths
    from compiler.train import read_progress, train

    fc = load_flowchart(WEATHER)
    rows = [render_offline(fc, p, seed=0, variant=v) for p in enumerate_paths(fc, max_loops=1).paths
            for v in range(6)]
    said: list[str] = []
    base = dict(base_model="scratch:micro", batch_size=4, vocab_size=300, logging_steps=1, max_steps=100_000,
                threads=1)
    # a budget of ~40 steps of this data, checked every 5 steps; a loss bar every check clears, but after 5
    # steps the held-out turns do not start with the right token yet (the trainer hands the callback its
    # model and held-out batches): it trains on
    cfg = TrainConfig(**base, max_tokens=40 * 4 * 60, eval_steps=5, stop_eval_loss=100.0)  # type: ignore[arg-type]
    train(rows[2:], rows[:2], tmp_path / "turns", cfg, echo=said.append)
    assert any("held-out turn starts at probability" in line and "training on" in line for line in said), said
    said.clear()
    monkeypatch.setattr(budget, "STOP_MIN_TURN_PROB", 0.0)  # the loss alone
    result = train(rows[2:], rows[:2], tmp_path / "early", cfg, echo=said.append)
    assert result.steps == 10, said  # the second check in a row under the bar
    assert any("stopping early at step 10 of" in line for line in said)
    progress = read_progress(tmp_path / "early")
    assert progress is not None and progress["status"] == "finished"
    # without the early stop the budget, not max_steps, sets how long it trains
    cfg = TrainConfig(**base, max_tokens=12 * 4 * 60, eval_steps=100)  # type: ignore[arg-type]
    result = train(rows[2:], rows[:2], tmp_path / "budget", cfg, echo=said.append)
    assert result.steps == progress_steps(tmp_path / "budget") < 100_000
    # the budget in tokens is what was read: within one step's worth of it
    assert abs(result.train_tokens - 12 * 4 * 60) <= result.train_tokens / result.steps + 1
    assert steps_for_tokens(12 * 4 * 60, [60], 4) == 12


def progress_steps(run: Path) -> int:
    from compiler.train import read_progress

    progress = read_progress(run)
    assert progress is not None
    return int(progress["max_steps"])


def test_steps_on_the_command_line_win_over_the_files_budget(tmp_path: Path) -> None:
    from compiler.config import load_compile_config

    path = tmp_path / "compile.yaml"
    path.write_text("train:\n  max_tokens: 1000000\n  max_steps: 1000\n")
    assert load_compile_config(path).train.max_tokens == 1_000_000
    cfg = load_compile_config(path, {"train.max_steps": "50"})
    assert (cfg.train.max_steps, cfg.train.max_tokens) == (50, 0)
    cfg = load_compile_config(path, {"train.max_steps": "50", "train.max_tokens": "2000"})
    assert (cfg.train.max_steps, cfg.train.max_tokens) == (50, 2000)


def test_seed_sweep_table_gives_the_pass_rate(tmp_path: Path) -> None:
    from bench.compile.seeds import parse_seeds, row, table

    assert parse_seeds("0-4") == [0, 1, 2, 3, 4] and parse_seeds("0,3,5-6") == [0, 3, 5, 6]
    for seed, passed in ((0, True), (1, False)):
        folder = tmp_path / f"seed-{seed}"
        folder.mkdir()
        (folder / "compile.json").write_text(json.dumps({
            "passed": passed, "reasons": [] if passed else ["success 0.85 < 0.90"],
            "stages": {"data": 1.0, "train": 100.0, "eval": 20.0},
            "train": {"train_tokens": 500_000, "tokens_per_s": 5000.0, "steps": 250, "best_eval_loss": 0.006},
            "metrics": {"node_accuracy": 1.0 if passed else 0.98, "success_rate": 1.0 if passed else 0.85,
                        "tool_accuracy": 1.0},
            "config": {"data": {"seed": seed}}}))
    text = table([row(tmp_path / "seed-0"), row(tmp_path / "seed-1"), row(tmp_path / "missing", seed=2)])
    assert "| 0 | pass | 1.000 | 1.000 | 1.000 | 250 | 500,000 | 5,000 | 0.0060 | 100 | 2 min 01 s |" in text
    assert "| 1 | FAIL |" in text and "| 2 | error:" in text
    assert "**Pass rate: 1 of 3 seeds.**" in text
