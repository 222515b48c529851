"""Teacher data at scale, against a fake teacher on a loopback port called through litellm (`openai/<model>`).

Calls made equal the estimate printed first; a rerun pays nothing; capping happens before rendering;
an outage or a budget stops with one line and keeps the cache and what was rendered; off-node replies
are regenerated or dropped and counted; paraphrased turns are judged by node.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
import yaml
from typer.testing import CliRunner

from compiler.cli import register
from compiler.config import load_compile_config
from compiler.flowchart import Flowchart, from_dict
from compiler.node_judge import NodeJudge, node_of_reply
from compiler.paths import enumerate_paths
from compiler.pipeline import build_data
from compiler.render import match_node, render_offline
from compiler.teacher import TeacherBudgetExceeded, TeacherUnavailable
from compiler.teacher_cache import TeacherCache, request_key
from compiler.teacher_run import count_calls

ROOT = Path(__file__).resolve().parents[2]
TRAVEL = ROOT / "configs" / "workflows" / "travel-booking.yaml"
KEY_ENV = "TIERGATE_TEST_TEACHER_KEY"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeTeacher:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.api_base = f"{self.base}/v1"

    def control(self, **settings: Any) -> None:
        httpx.post(f"{self.base}/_control", json=settings, timeout=10).raise_for_status()

    def stats(self) -> dict[str, int]:
        return dict(httpx.get(f"{self.base}/_stats", timeout=10).json())


@pytest.fixture(scope="module")
def teacher_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeTeacher]:
    port = _free_port()
    log = tmp_path_factory.mktemp("fake-teacher") / "server.log"
    with log.open("w") as sink:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("fake_teacher.py")), "--port", str(port)],
                                stdout=sink, stderr=subprocess.STDOUT)
    server = FakeTeacher(port)
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{server.api_base}/models", timeout=1).raise_for_status()
            break
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"fake teacher did not start: {log.read_text()}") from None
            time.sleep(0.1)
    yield server
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def teacher(teacher_server: FakeTeacher, monkeypatch: pytest.MonkeyPatch) -> FakeTeacher:
    monkeypatch.setenv(KEY_ENV, "sk-test-teacher")
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    teacher_server.control()
    return teacher_server


@pytest.fixture(scope="module")
def travel() -> Flowchart:
    return from_dict(yaml.safe_load(TRAVEL.read_text()), source=str(TRAVEL))


def teacher_settings(server: FakeTeacher, **extra: Any) -> dict[str, Any]:
    return {
        "data.teacher_model": "openai/fake-teacher",
        "data.teacher_api_base": server.api_base,
        "data.teacher_api_key_env": KEY_ENV,
        "data.variants_per_path": 3,
        "data.max_train_conversations": 10,
        "data.max_eval_conversations": 4,
        "data.teacher_concurrency": 3,
        "data.teacher_usd_per_mtok_in": 1.0,
        "data.teacher_usd_per_mtok_out": 2.0,
        "data.teacher_retries": 1,
        "data.teacher_retry_wait_s": 0.01,
        **extra,
    }


def text_turns(rows: list[dict[str, Any]]) -> int:
    """Messages a model wrote: every user turn and every assistant text turn (tool calls come from the chart)."""
    return sum(
        1 for r in rows for m in r["messages"][1:] if m["role"] in ("user", "assistant") and not m.get("tool_calls")
    )


def read_rows(out: Path, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "data" / f"{name}.jsonl").read_text().splitlines()]


def cached_replies(out: Path) -> int:
    with sqlite3.connect(out / "cache" / "teacher.sqlite") as db:
        return int(db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])


def test_calls_made_equal_the_estimate_and_a_rerun_pays_nothing(
    teacher: FakeTeacher, travel: Flowchart, tmp_path: Path
) -> None:
    teacher.control(delay=0.05)
    cfg = load_compile_config(None, teacher_settings(teacher))
    lines: list[str] = []
    meta = build_data(travel, cfg, tmp_path, echo=lines.append)
    report, served = meta["teacher"], teacher.stats()
    assert report["calls"] == report["estimate"]["calls"] == served["requests"] > 0
    assert lines[0].startswith(f"teacher estimate: {report['conversations']} conversations need {report['calls']} new calls")
    assert "$" in lines[0] and "configured price" in lines[0]
    assert 1 < served["max_in_flight"] <= 3  # bounded concurrency, and really concurrent
    assert report["usd"] > 0 and report["dropped_off_node"] == report["regenerated"] == 0
    rows = {name: read_rows(tmp_path, name) for name in ("train", "eval", "heldout")}
    assert len(rows["train"]) == 10 and len(rows["eval"]) == 4  # the caps
    # capped before rendering: every call made is a turn of a kept conversation, nothing was thrown away
    assert text_turns([r for group in rows.values() for r in group]) == report["calls"]
    paths = enumerate_paths(travel, max_loops=cfg.data.max_loops, budget=cfg.data.path_budget, seed=0).paths
    assert count_calls(travel, [(p, v) for p in paths for v in range(3)]) > 2 * report["calls"]
    judge = NodeJudge(travel)
    for row in rows["train"]:
        assert row["tiergate"]["source"] == "teacher"
        said = [m for m in row["messages"] if m["role"] == "assistant"]
        for m, node in zip(said, row["tiergate"]["nodes"], strict=True):
            assert m.get("tool_calls") or judge.fits(node, m["content"], row["tiergate"]["slots"])
    assert cached_replies(tmp_path) == report["calls"]
    # the gate judges the teacher's paraphrased turns by node; by template wording they fail
    from compiler.simulate import ReplayPolicy, simulate

    for ref in rows["eval"]:
        assert all(turn.node_ok for turn in simulate(ref, ReplayPolicy(ref), travel).turns)
        as_offline = {**ref, "tiergate": {**ref["tiergate"], "source": "offline"}}
        assert not simulate(as_offline, ReplayPolicy(as_offline), travel).completed

    first = (tmp_path / "data" / "train.jsonl").read_bytes()
    teacher.control()
    lines.clear()
    again = build_data(travel, cfg, tmp_path, echo=lines.append)["teacher"]
    assert teacher.stats()["requests"] == 0 and again["calls"] == again["estimate"]["calls"] == 0
    assert again["estimate"]["cached"] == report["calls"] and "0 new calls" in lines[0]
    assert (tmp_path / "data" / "train.jsonl").read_bytes() == first


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def _cli(chart: Path, out: Path, teacher: FakeTeacher, *extra: str, **settings: Any) -> Any:
    sets = [f"{k}={v}" for k, v in teacher_settings(teacher, **settings).items() if k != "data.teacher_model"]
    args = ["compile", str(chart), "--out", str(out), "--teacher", "openai/fake-teacher", *extra]
    for s in sets:
        args += ["--set", s]
    return CliRunner().invoke(_app(), args)


def test_an_outage_mid_run_fails_in_one_line_and_the_rerun_resumes_from_the_cache(
    teacher: FakeTeacher, travel: Flowchart, tmp_path: Path
) -> None:
    pytest.importorskip("trl", reason="`tiergate compile` needs the `compile` extra")
    teacher.control(fail_from=41)
    res = _cli(TRAVEL, tmp_path, teacher)
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in res.output
    assert err.startswith("error: teacher model `openai/fake-teacher` failed 2 time(s), last: ")
    assert "run the same command again to resume" in err and "teacher-partial.jsonl" in err
    served = teacher.stats()
    paid = served["requests"] - served["failed"]
    assert paid == 40 and cached_replies(tmp_path) == 40  # every reply paid for is in the cache
    partial = (tmp_path / "data" / "teacher-partial.jsonl").read_text().splitlines()
    assert all(json.loads(line)["tiergate"]["source"] == "teacher" for line in partial)
    assert not (tmp_path / "data" / "train.jsonl").exists()

    teacher.control()
    cfg = load_compile_config(None, teacher_settings(teacher))
    report = build_data(travel, cfg, tmp_path, echo=lambda _line: None)["teacher"]
    assert report["estimate"]["cached"] == 40 and report["cache_hits"] == 40
    assert report["calls"] == report["estimate"]["calls"] == teacher.stats()["requests"]
    rows = [r for name in ("train", "eval", "heldout") for r in read_rows(tmp_path, name)]
    assert text_turns(rows) == report["calls"] + 40  # paid once in all: nothing twice


def test_the_budget_refuses_an_estimate_over_it_before_any_call(
    teacher: FakeTeacher, tmp_path: Path
) -> None:
    pytest.importorskip("trl", reason="`tiergate compile` needs the `compile` extra")
    res = _cli(TRAVEL, tmp_path, teacher, "--max-teacher-usd", "0.01", **{"data.teacher_usd_per_mtok_in": 100.0})
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: the teacher estimate $")
    assert "exceeds --max-teacher-usd $0.01" in err and "nothing was called" in err
    assert teacher.stats()["requests"] == 0


def test_the_budget_stops_a_run_that_costs_more_than_estimated(
    teacher: FakeTeacher, travel: Flowchart, tmp_path: Path
) -> None:
    teacher.control(usage_scale=100)  # the teacher bills 100x the tokens the estimate expects
    cfg = load_compile_config(None, teacher_settings(teacher, **{"data.max_teacher_usd": 0.5}))
    lines: list[str] = []
    with pytest.raises(TeacherBudgetExceeded, match=r"reached the budget of \$0\.50") as caught:
        build_data(travel, cfg, tmp_path, echo=lines.append)
    assert "\n" not in str(caught.value) and "resume" in str(caught.value)
    served = teacher.stats()["requests"]
    assert 0 < served < int(lines[0].split(" need ")[1].split()[0])
    assert cached_replies(tmp_path) == served
    assert (tmp_path / "data" / "teacher-partial.jsonl").exists()


def test_a_persistent_outage_from_the_first_call_keeps_an_empty_cache_and_says_so(
    teacher: FakeTeacher, travel: Flowchart, tmp_path: Path
) -> None:
    teacher.control(fail_from=1)
    cfg = load_compile_config(None, teacher_settings(teacher))
    with pytest.raises(TeacherUnavailable, match=r"failed 2 time\(s\), last: ServiceUnavailableError") as caught:
        build_data(travel, cfg, tmp_path, echo=lambda _line: None)
    assert "\n" not in str(caught.value) and "kept 0 rendered conversations" in str(caught.value)
    assert cached_replies(tmp_path) == 0


def test_off_node_replies_are_regenerated_and_counted(teacher: FakeTeacher, travel: Flowchart, tmp_path: Path) -> None:
    teacher.control(off_node_first=2)
    cfg = load_compile_config(None, teacher_settings(teacher))
    report = build_data(travel, cfg, tmp_path, echo=lambda _line: None)["teacher"]
    assert report["regenerated"] == 2 and report["dropped_off_node"] == 0
    assert report["calls"] == report["estimate"]["calls"] + 2 == teacher.stats()["requests"]
    rows = [r for name in ("train", "eval", "heldout") for r in read_rows(tmp_path, name)]
    assert all("turtles" not in (m.get("content") or "") for r in rows for m in r["messages"])


def test_a_node_the_teacher_never_performs_drops_its_conversations(
    teacher: FakeTeacher, travel: Flowchart, tmp_path: Path
) -> None:
    teacher.control(off_node_match="Sorry, there is no flight")  # the `no_flights` node
    cfg = load_compile_config(None, teacher_settings(teacher))
    meta = build_data(travel, cfg, tmp_path, echo=lambda _line: None)
    report = meta["teacher"]
    rows = [r for name in ("train", "eval", "heldout") for r in read_rows(tmp_path, name)]
    assert report["dropped_off_node"] > 0 and report["dropped_by_node"] == {"no_flights": report["dropped_off_node"]}
    assert report["regenerated"] == 2 * report["dropped_off_node"]  # data.teacher_regenerations = 2 each
    assert report["rendered"] == len(rows) == report["conversations"] - report["dropped_off_node"]
    assert all("no_flights" not in r["tiergate"]["nodes"] for r in rows)
    assert meta["conversations"]["train"] == len(read_rows(tmp_path, "train"))


def test_a_killed_run_resumes_without_paying_twice(teacher: FakeTeacher, travel: Flowchart, tmp_path: Path) -> None:
    teacher.control(delay=0.05)
    settings = teacher_settings(teacher)
    script = (
        "import json, sys, yaml; from pathlib import Path; from compiler.config import load_compile_config; "
        "from compiler.flowchart import from_dict; from compiler.pipeline import build_data; "
        f"fc = from_dict(yaml.safe_load(Path({str(TRAVEL)!r}).read_text())); "
        f"build_data(fc, load_compile_config(None, json.loads(sys.argv[1])), Path({str(tmp_path)!r}))"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(settings)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while teacher.stats()["requests"] < 30 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no cleanup runs
    proc.wait(timeout=10)
    assert proc.returncode != 0, "the run finished before it could be killed"
    kept = cached_replies(tmp_path)
    assert kept >= 30 - 3  # the calls in flight at the kill (concurrency 3) are lost, nothing else
    teacher.control()
    cfg = load_compile_config(None, settings)
    report = build_data(travel, cfg, tmp_path, echo=lambda _line: None)["teacher"]
    assert report["estimate"]["cached"] == kept and report["calls"] == teacher.stats()["requests"]
    rows = [r for name in ("train", "eval", "heldout") for r in read_rows(tmp_path, name)]
    assert text_turns(rows) == report["calls"] + kept


def test_the_cache_key_is_the_exact_request(tmp_path: Path) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    key = request_key("openai/a", msgs, {"temperature": 0.7})
    assert key == request_key("openai/a", [dict(m) for m in msgs], {"temperature": 0.7})
    assert len({key, request_key("openai/b", msgs, {"temperature": 0.7}),
                request_key("openai/a", msgs, {"temperature": 0.2}),
                request_key("openai/a", [{"role": "user", "content": "hi!"}], {"temperature": 0.7}),
                request_key("openai/a", msgs, {"temperature": 0.7}, tools=[{"type": "function"}])}) == 5
    cache = TeacherCache(tmp_path / "c.sqlite")
    cache.put(key, "openai/a", "hello", 3, 1, 0.001)
    cache.close()
    again = TeacherCache(tmp_path / "c.sqlite")
    hit = again.get(key)
    assert hit is not None and hit.reply == "hello" and hit.usd == 0.001 and len(again) == 1
    again.close()
    (tmp_path / "bad.sqlite").write_text("not a database, " * 200)
    with pytest.raises(ValueError, match="cannot be opened"):
        TeacherCache(tmp_path / "bad.sqlite").get(key)


SLOTS = {"origin": "Oslo", "city": "Rome", "date": "9 June", "passengers": "2", "flight": "SK214", "price": "124",
         "booking_ref": "BK9M2X"}
PARAPHRASES = [
    ("ask_trip", "Hello! Happy to help. Which city are you leaving from, where to, when, and how many travellers?"),
    ("offer_flight", "Good news: SK214 leaves Oslo for Rome on 9 June and costs 124 EUR each. Do you want me to book it for 2?"),
    ("offer_flight", "There's a direct flight, SK214, for 124 EUR per person. Should I go ahead and reserve it?"),
    ("no_flights", "I'm afraid there are no flights available that day. Shall we search again with another date?"),
    ("payment_failed", "Your card was declined for SK214. Would you like me to retry, or should I connect you with a colleague?"),
    ("booked", "All done! SK214 is confirmed, your reference is BK9M2X. Enjoy Rome!"),
    ("goodbye", "Alright, I haven't booked anything. Thanks for contacting Skyway Travel and have a nice day!"),
    ("handover", "Let me pass you to one of my colleagues; please stay in the chat, someone will join shortly."),
    (None, "I like turtles and the weather is lovely today."),
    (None, "Bananas are yellow."),
    (None, "I am not sure how to help with that."),  # simulate.ConstantPolicy, the known-bad model
]


@pytest.mark.parametrize(("node", "text"), PARAPHRASES)
def test_paraphrased_turns_are_judged_by_node(travel: Flowchart, node: str | None, text: str) -> None:
    assert node_of_reply(travel, None, text, SLOTS) == node
    if node is not None:  # the template matcher alone misses these: the reason node_of_reply exists
        assert match_node(travel, {"role": "assistant", "content": text}, SLOTS) is None


def test_template_turns_keep_their_node(travel: Flowchart) -> None:
    judge = NodeJudge(travel)
    for path in enumerate_paths(travel).paths:
        conv = render_offline(travel, path, seed=1)
        said = [m for m in conv["messages"] if m["role"] == "assistant"]
        for m, node in zip(said, conv["tiergate"]["nodes"], strict=True):
            if not m.get("tool_calls"):
                assert judge.best(m["content"], conv["tiergate"]["slots"]) == node
                assert judge.fits(node, m["content"], conv["tiergate"]["slots"])
