"""Mining on small known traces: exact nodes and edges, slots, the static split, misfits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from compiler.flowchart import from_dict, validate
from compiler.mine.automaton import infer_graph
from compiler.mine.cli import register_mine
from compiler.mine.fitness import fitness
from compiler.mine.miner import holdout_split, mine
from compiler.mine.static import split_static
from compiler.mine.traces import MineError, read_traces, trace_from_record, traces_from_records

BASE = "You are WeatherBot.\nProcedure: ask for the city, look up the weather, report it."
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def weather(city: str, day: int, temp: int, give_up: bool = False) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": f"{BASE}\nToday is {day} May."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Which city would you like the weather for?"},
    ]
    if give_up:
        messages += [{"role": "user", "content": "Never mind, bye."},
                     {"role": "assistant", "content": "No problem, goodbye!"}]
    else:
        messages += [
            {"role": "user", "content": f"{city}, please."},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
                "name": "get_weather", "arguments": json.dumps({"city": city})}}]},
            {"role": "tool", "tool_call_id": "c1", "content": json.dumps({"temp_c": temp})},
            {"role": "assistant", "content": f"It is {temp} degrees in {city} today."},
        ]
    return {"messages": messages, "tools": TOOLS}


KNOWN = [
    weather("Paris", 3, 21), weather("Rome", 4, 25), weather("Oslo", 5, 12), weather("Lima", 6, 30),
    weather("Paris", 7, 19), weather("", 8, 0, give_up=True), weather("", 9, 0, give_up=True),
]


def test_known_traces_give_exact_nodes_and_edges() -> None:
    fc = mine(traces_from_records(KNOWN), name="weather").flowchart
    kinds = {n.id: n.kind for n in fc.nodes.values()}
    assert kinds == {
        "start": "start",
        "which_city_like_weather": "agent",
        "which_city_like_weather_answer": "decision",
        "get_weather": "tool",
        "degrees_today": "terminal",
        "no_problem_goodbye": "terminal",
    }
    assert {(e.source, e.target) for e in fc.edges} == {
        ("start", "which_city_like_weather"),
        ("which_city_like_weather", "which_city_like_weather_answer"),
        ("which_city_like_weather_answer", "get_weather"),
        ("which_city_like_weather_answer", "no_problem_goodbye"),
        ("get_weather", "degrees_today"),
    }
    assert fc.nodes["degrees_today"].outcome == "success"
    assert fc.nodes["no_problem_goodbye"].outcome == "abandon"
    assert fc.nodes["degrees_today"].say == ("It is {temp_c} degrees in {city} today.",)
    assert fc.nodes["get_weather"].args == {"city": "{city}"}
    assert fc.nodes["get_weather"].result == '{"temp_c": {temp_c}}'
    branch = {e.target: e.utterances for e in fc.edges if e.source == "which_city_like_weather_answer"}
    assert branch == {"get_weather": ("{city}, please.",), "no_problem_goodbye": ("Never mind, bye.",)}
    assert fc.system_prompt == "You are WeatherBot."
    assert validate(fc) == []  # structure and synthesis clean: the draft renders as it is


def test_slots_follow_the_users_city_into_the_call_and_the_result_into_the_reply() -> None:
    mined = mine(traces_from_records(KNOWN))
    slots = {s.name: s for s in mined.slots.slots}
    assert set(slots) == {"city", "temp_c"}
    assert (slots["city"].kind, slots["city"].source, slots["city"].used_in) == ("argument", "user", ("get_weather.city",))
    assert slots["city"].values == ("Paris", "Rome", "Oslo", "Lima")
    assert (slots["temp_c"].kind, slots["temp_c"].source) == ("quoted", "tool:get_weather")
    assert mined.flowchart.slots["temp_c"] == ("21", "25", "12", "30", "19")


def test_past_the_clustering_cap_rare_replies_join_the_nearest_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    import compiler.mine.actions as actions

    records = [*KNOWN, weather("", 10, 0, give_up=True)]
    records[-1]["messages"][-1]["content"] = "No problem at all, goodbye then!"  # a rarer wording
    full = mine(traces_from_records(records)).flowchart
    monkeypatch.setattr(actions, "MAX_CLUSTERED", 3)  # the rarest wording is not clustered
    capped = mine(traces_from_records(records)).flowchart
    assert set(capped.nodes) == set(full.nodes) and capped.edges == full.edges
    assert capped.nodes["no_problem_goodbye"].say == ("No problem, goodbye!", "No problem at all, goodbye then!")


def test_a_constant_argument_is_a_literal_not_a_slot() -> None:
    records = [weather("Paris", d, 20 + d) for d in range(1, 6)]
    mined = mine(traces_from_records(records))
    assert "city" not in {s.name for s in mined.slots.slots}
    assert mined.flowchart.nodes["get_weather"].args == {"city": "Paris"}


def test_static_lines_stay_and_the_date_is_transient() -> None:
    traces = traces_from_records(KNOWN)
    split = split_static(traces)
    assert split.static_lines == tuple(BASE.splitlines())
    assert split.step_lines == {}
    assert [(g.shape, g.conversations) for g in split.conversation_lines] == [("Today is", 7)]
    assert split.transient(traces[0].turns[0].system) == "Today is 3 May."
    assert split.tools_static and split.tool_names == ("get_weather",)


def stepped(city: str, wording: str) -> dict[str, Any]:
    """An app that re-sends one system message with a step line in it (no second message)."""
    def system(step: str) -> dict[str, Any]:
        return {"role": "system", "content": f"You are WeatherBot.\nToday is 3 May.\nStep: {step}"}

    return {"messages": [
        system("ask_city"), {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": wording},
        {"role": "user", "content": city}, system("lookup"),
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c", "type": "function", "function": {
            "name": "get_weather", "arguments": json.dumps({"city": city})}}]},
        {"role": "tool", "tool_call_id": "c", "content": '{"sky": "clear"}'}, system("report"),
        {"role": "assistant", "content": f"Clear skies over {city}."},
    ]}


def test_a_step_line_names_the_node_whatever_the_wording() -> None:
    records = [stepped(c, w) for c, w in [("Paris", "Which city?"), ("Rome", "Where are you?"),
                                          ("Oslo", "Tell me your town, please."), ("Lima", "Which city?")]]
    traces = traces_from_records(records)
    assert traces[0].turns[1].system.splitlines()[-1] == "Step: lookup"  # the re-sent message replaced the old one
    mined = mine(traces)
    assert set(mined.split.step_lines) == {"Step: ask_city", "Step: lookup", "Step: report"}
    fc = mined.flowchart
    assert set(fc.nodes) == {"start", "ask_city", "get_weather", "report"}
    assert fc.nodes["ask_city"].say[0] == "Which city?" and fc.nodes["ask_city"].text == "Step: ask_city"
    assert fc.nodes["report"].kind == "terminal"


def test_fitness_names_the_conversations_that_do_not_fit() -> None:
    mined = mine(traces_from_records(KNOWN))
    eager = weather("Bern", 3, 14)
    del eager["messages"][2:4]  # calls the tool without asking for the city
    left = weather("Bern", 3, 14)
    del left["messages"][3:]  # the customer leaves after the question
    odd = weather("Bern", 3, 14)
    odd["messages"][2]["content"] = "Quantum chromodynamics explains the strong force."
    held = traces_from_records([weather("Bern", 3, 14), eager, left, odd])
    report = fitness(mined, held)
    assert (report.conversations, report.fitting, report.share) == (4, 1, 0.25)
    reasons = dict(report.misfits)
    assert reasons["conversation 2"] == "turn 1: `get_weather` never follows `start`"
    assert reasons["conversation 3"] == "ends at `which_city_like_weather`, where the workflow does not end"
    assert reasons["conversation 4"] == "turn 1: a reply like no mined step"
    # The give-up branch (its edge and terminal) is the only part not walked.
    assert (report.node_coverage, report.edge_coverage) == (pytest.approx(5 / 6), pytest.approx(4 / 5))


def test_noise_sets_rare_deviations_aside() -> None:
    eager = weather("Bern", 3, 14)
    del eager["messages"][2:4]  # the frontier skipped the question once
    clean = mine(traces_from_records(KNOWN * 3), name="weather")
    kept = mine(traces_from_records([*KNOWN * 3, eager]), name="weather")
    assert "opening" in kept.flowchart.nodes and kept.outliers == []  # every transition seen is an edge
    filtered = mine(traces_from_records([*KNOWN * 3, eager]), name="weather", noise=0.1)
    assert filtered.outliers == ["conversation 22"]
    assert filtered.flowchart.nodes == clean.flowchart.nodes and filtered.flowchart.edges == clean.flowchart.edges
    assert filtered.used == list(range(21)) and len(filtered.turn_nodes) == 21


def test_a_node_used_in_two_roles_is_split_and_a_loop_is_not() -> None:
    # `check` follows `a` (then `b` follows) and `c` (then `d` follows): two roles of one action.
    labels = [["a", "check", "b"]] * 6 + [["c", "check", "d"]] * 6 + [["a", "check", "b", "a", "check", "b"]] * 2
    graph = infer_graph(labels, min_support=5)
    assert sorted(graph.nodes.values()) == ["a", "b", "c", "check", "check", "d"]
    assert graph.splits == 1
    # Below the evidence threshold nothing is split.
    assert len(infer_graph(labels, min_support=7).nodes) == 5


def test_system_messages_sent_mid_conversation_replace_the_step() -> None:
    t = trace_from_record({"messages": [
        {"role": "system", "content": "Procedure: greet, then help."},
        {"role": "system", "content": "Current step: greet"},
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"},
        {"role": "system", "content": "Current step: help"},
        {"role": "user", "content": "help"}, {"role": "assistant", "content": "Sure."},
    ]}, "c")
    assert [turn.system for turn in t.turns] == [
        "Procedure: greet, then help.\nCurrent step: greet", "Procedure: greet, then help.\nCurrent step: help"]
    assert [turn.user for turn in t.turns] == [("hi",), ("help",)]
    assert t.turns[1].history == 6


def test_holdout_split_is_by_conversation_and_seeded() -> None:
    traces = traces_from_records(KNOWN * 3)
    train, held = holdout_split(traces, 0.2, seed=1)
    assert len(held) == 4 and len(train) == 17
    assert {t.id for t in held}.isdisjoint({t.id for t in train})
    assert [t.id for t in holdout_split(traces, 0.2, seed=1)[1]] == [t.id for t in held]
    with pytest.raises(MineError, match="holdout share"):
        holdout_split(traces, 1.0)


def _cli() -> typer.Typer:
    app = typer.Typer()
    flowchart = typer.Typer()
    register_mine(flowchart)

    @flowchart.command("noop")
    def noop() -> None:  # a second command keeps `mine` a named subcommand, as in `tiergate flowchart`
        """Nothing."""

    app.add_typer(flowchart, name="flowchart")
    return app


def test_cli_writes_a_chart_that_check_accepts_and_reports_fitness(tmp_path: Path) -> None:
    source = tmp_path / "weather.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in KNOWN * 4), encoding="utf-8")
    out = tmp_path / "weather.yaml"
    result = CliRunner().invoke(_cli(), ["flowchart", "mine", str(source), "--out", str(out), "--holdout", "0.25"])
    assert result.exit_code == 0, result.output
    assert "replay fitness: 1.000 (7/7 held-out conversations fit)" in result.stderr
    assert "slot city: user -> get_weather.city" in result.stderr
    fc = from_dict(yaml.safe_load(out.read_text(encoding="utf-8")))
    assert fc.name == "weather" and validate(fc) == []
    drawn = CliRunner().invoke(_cli(), ["flowchart", "mine", str(source), "--to", "mermaid"])
    assert drawn.exit_code == 0 and drawn.stdout.startswith("flowchart TD")
    assert 'get_weather[["get_weather"]]' in drawn.stdout


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, [], "cannot read the conversations"),
        ('{"messages": []}\nnot json\n', [], "line 2: not JSON"),
        ('{"messages": [{"role": "user", "content": "hi"}]}\n', [], "no conversation with an assistant turn"),
        (json.dumps(KNOWN[0]) + "\n", ["--to", "png"], "cannot write `png`"),
        (json.dumps(KNOWN[0]) + "\n" + json.dumps(KNOWN[1]) + "\n", [],
         "in.jsonl` has 2 conversation(s) with an assistant turn; --holdout 0.2 needs at least 3 to hold one out"),
        (json.dumps(KNOWN[0]) + "\n", ["--holdout", "0.5"], "has 1 conversation(s) with an assistant turn; "
         "--holdout 0.5 needs at least 2 to hold one out and measure fitness: capture more, or pass --holdout 0"),
    ],
)
def test_cli_errors_are_one_line(tmp_path: Path, content: str | None, args: list[str], message: str) -> None:
    source = tmp_path / "in.jsonl"
    if content is not None:
        source.write_text(content, encoding="utf-8")
    result = CliRunner().invoke(_cli(), ["flowchart", "mine", str(source), *args])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(("share", "fewest"), [(0.2, 3), (0.25, 3), (0.3, 2), (0.5, 2), (0.9, 2), (0.1, 6), (0.01, 51)])
def test_fewest_to_hold_out_is_the_first_count_holdout_split_holds_one_of(share: float, fewest: int) -> None:
    from compiler.mine.miner import fewest_to_hold_out

    assert fewest_to_hold_out(share) == fewest
    assert len(holdout_split(traces_from_records(KNOWN * 8)[:fewest], share)[1]) == 1
    assert holdout_split(traces_from_records(KNOWN * 8)[: fewest - 1], share)[1] == []


def test_a_workflow_name_is_read_through_the_apps_reader_and_a_file_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The contract with the gateway (gateway/cli.py `captured_lines`): a reader in the context object."""
    from compiler.mine.cli import CAPTURED_LINES

    asked: list[tuple[str, str | None]] = []

    def captured(workflow: str, config: str | None) -> Any:
        asked.append((workflow, config))
        for record in KNOWN * 2:
            yield json.dumps(record).encode() + b"\n"

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "w.yaml"
    result = CliRunner().invoke(_cli(), ["flowchart", "mine", "weather", "-c", "gw.yaml", "--out", str(out)],
                                obj={CAPTURED_LINES: captured})
    assert result.exit_code == 0, result.output
    assert asked == [("weather", "gw.yaml")]
    assert yaml.safe_load(out.read_text(encoding="utf-8"))["name"] == "weather"
    assert "replay fitness: 1.000 (3/3 held-out conversations fit)" in result.stderr
    (tmp_path / "weather").write_text("".join(json.dumps(r) + "\n" for r in KNOWN), encoding="utf-8")
    result = CliRunner().invoke(_cli(), ["flowchart", "mine", "weather", "--holdout", "0"], obj={CAPTURED_LINES: captured})
    assert result.exit_code == 0 and asked == [("weather", "gw.yaml")]  # the file named `weather` was read
    assert result.stderr.startswith("mined `weather` from 7 conversations")

    def broken(workflow: str, config: str | None) -> Any:
        yield json.dumps(KNOWN[0]).encode()
        yield b"{not json"

    result = CliRunner().invoke(_cli(), ["flowchart", "mine", "acme"], obj={CAPTURED_LINES: broken})
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: `acme` conversation 2: not JSON (Expecting property name enclosed in double quotes); "
        "each line must be one conversation"
    ]


def test_read_traces_skips_conversations_without_an_agent_turn(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n\n"
                      + json.dumps(KNOWN[0]) + "\n", encoding="utf-8")
    traces = read_traces(source)
    assert [t.id for t in traces] == ["`in.jsonl` line 3"]


def test_a_line_separator_inside_a_string_is_no_line_end_and_bad_utf8_is_one_line(tmp_path: Path) -> None:
    record = json.loads(json.dumps(KNOWN[0]))
    record["messages"][1]["content"] = "Hi\u2028there"
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    assert [t.turns[0].user for t in read_traces(source)] == [("Hi\u2028there",)]
    source.write_bytes(b'{"messages": "\xff"}\n')
    with pytest.raises(MineError, match=r"in.jsonl` line 1: not JSON \(not UTF-8\)"):
        read_traces(source)


def test_the_mermaid_drawing_reads_back_as_the_same_chart() -> None:
    from compiler.formats import loads
    from compiler.mine.draw import to_mermaid

    fc = mine(traces_from_records(KNOWN), name="weather").flowchart
    drawn = loads(to_mermaid(fc), "mermaid", name="weather")
    assert {n.id: n.kind for n in drawn.nodes.values()} == {n.id: n.kind for n in fc.nodes.values()}
    assert [(e.source, e.target) for e in drawn.edges] == [(e.source, e.target) for e in fc.edges]
    assert {t: drawn.nodes[t].outcome for t in drawn.terminals} == {t: fc.nodes[t].outcome for t in fc.terminals}


def test_odd_but_valid_records_are_mined() -> None:
    """Content parts, a developer message, text beside a tool call, arguments that are not JSON."""
    def odd(city: str) -> dict[str, Any]:
        return {"messages": [
            {"role": "developer", "content": [{"type": "text", "text": "You are WeatherBot."}]},
            {"role": "user", "content": [{"type": "text", "text": f"Weather in {city}?"}]},
            {"role": "assistant", "content": "Let me look.", "tool_calls": [{"id": "a", "type": "function",
                "function": {"name": "get_weather", "arguments": json.dumps({"city": city})}}]},
            {"role": "tool", "tool_call_id": "a", "content": "sunny"},
            {"role": "assistant", "content": [{"type": "text", "text": f"Sunny in {city}."}]},
            {"role": "user", "content": "Now in Bern?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "b", "type": "function",
                "function": {"name": "get_weather", "arguments": "{not json"}}]},
            {"role": "tool", "tool_call_id": "b", "content": "error"},
            {"role": "assistant", "content": "Sorry, that failed."},
        ]}

    mined = mine(traces_from_records([odd(c) for c in ["Paris", "Rome", "Oslo"]]))
    fc = mined.flowchart
    assert [i for i in validate(fc) if i.kind == "structure"] == []
    assert fc.system_prompt == "You are WeatherBot."
    assert fc.nodes["get_weather"].args == {"city": "{city}"}
    assert {n.kind for n in fc.nodes.values()} >= {"tool", "agent", "terminal"}


def test_tiergate_flowchart_group_has_mine(tmp_path: Path) -> None:
    from compiler.flowchart_cli import register_flowchart

    app = typer.Typer()
    register_flowchart(app)
    source = tmp_path / "w.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in KNOWN), encoding="utf-8")
    out = tmp_path / "w.yaml"
    result = CliRunner().invoke(app, ["flowchart", "mine", str(source), "--holdout", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8").startswith("name: w\n")
    checked = CliRunner().invoke(app, ["flowchart", "check", str(out), "--strict"])
    assert checked.exit_code == 0, checked.output
    assert "decision hubs:  1" in checked.stdout


def test_the_same_traffic_gives_the_same_chart_whatever_the_hash_seed(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    source = tmp_path / "w.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in KNOWN * 3), encoding="utf-8")
    outs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-m", "compiler.mine.cli", str(source)], env=env,
                              capture_output=True, text=True, timeout=120, check=True)
        outs.append(done.stdout)
    assert outs[0] == outs[1] and outs[0].startswith("name: w")


def claim(kind: str, n: int) -> dict[str, Any]:
    question = {"motor": "Which car was damaged?", "home": "What happened to your home?"}[kind]
    return {"messages": [
        {"role": "system", "content": "You are ClaimBot."},
        {"role": "user", "content": {"motor": "My car was hit.", "home": "A pipe burst."}[kind]},
        {"role": "assistant", "content": question},
        {"role": "user", "content": f"Policy P{n:03d}."},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c", "type": "function", "function": {
            "name": "file_claim", "arguments": json.dumps({"policy": f"P{n:03d}", "claim_type": kind})}}]},
        {"role": "tool", "tool_call_id": "c", "content": '{"ok": true}'},
        {"role": "assistant", "content": "Your claim is filed."},
    ]}


def test_a_constant_argument_that_differs_by_place_names_the_step() -> None:
    records = [claim("motor", i) for i in range(4)] + [claim("home", i) for i in range(4, 8)]
    mined = mine(traces_from_records(records))
    fc = mined.flowchart
    tools = {n.id: dict(n.args) for n in fc.nodes.values() if n.kind == "tool"}
    assert tools == {"file_claim_motor": {"policy": "{policy}", "claim_type": "motor"},
                     "file_claim_home": {"policy": "{policy}", "claim_type": "home"}}
    wrong = claim("motor", 9)
    wrong["messages"][4]["tool_calls"][0]["function"]["arguments"] = json.dumps({"policy": "P009", "claim_type": "home"})
    report = fitness(mined, traces_from_records([claim("home", 8), wrong]))
    assert report.fitting == 1
    assert report.misfits[0][1].startswith("turn 2: `file_claim_home` never follows")


def test_a_cluster_whose_wordings_keep_to_their_own_places_is_split() -> None:
    from compiler.mine.actions import split_by_place

    plumber = "a plumber is on the way. roughly how much is the damage worth?"
    estimate = "roughly how much is the damage worth?"
    rows = [["tool:dispatch", "say:q"]] * 4 + [["say:leak", "say:q"]] * 4 + [["say:fire", "say:q"]] * 3
    first = {(ti, 0): r[0] for ti, r in enumerate(rows) if r[0].startswith("say:")}
    normal = {**first, **{(ti, 1): plumber if ti < 4 else estimate for ti in range(len(rows))}}
    out = split_by_place([list(r) for r in rows], normal)
    assert [r[1] for r in out] == ["say:" + plumber] * 4 + ["say:q"] * 7
    # Wordings spread over the same places are one step's paraphrases: nothing is split.
    mixed = {**first, **{(ti, 1): plumber if ti % 2 else estimate for ti in range(len(rows))}}
    assert split_by_place([list(r) for r in rows], mixed) == rows


def test_traffic_without_a_procedure_says_so() -> None:
    import random

    rng = random.Random(0)

    def words() -> str:
        return " ".join("".join(rng.choice("abcdefghij") for _ in range(5)) for _ in range(12))

    records = [{"messages": [m for _ in range(3) for m in (
        {"role": "user", "content": words()}, {"role": "assistant", "content": words()})]} for _ in range(30)]
    fc = mine(traces_from_records(records)).flowchart
    assert any("steps were seen once: this traffic may not follow one procedure" in n for n in fc.notes)
    assert not mine(traces_from_records(KNOWN)).flowchart.notes
