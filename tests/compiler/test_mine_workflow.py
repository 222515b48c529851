"""`tiergate flowchart mine WORKFLOW`: a workflow's conversations, captured by a real gateway, mined from its store.

A small weather app talks to the gateway through the official `openai` SDK (headers name its workflow
and each conversation; the fake frontier answers as scripted), the gateway captures every turn; then
`python -m gateway.cli flowchart mine weather --config CFG` runs as a process. Its chart and report
must be those of mining `tiergate export weather`'s JSONL, and its mistakes one line, exit 2.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from tg_testing import ROOT, free_port

BASE = "You are WeatherBot.\nProcedure: ask for the city, look up the weather, report it."
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
# (city, day, temperature); no city: the user gives up. Twice over: 14 conversations, 3 held out.
RUNS = [("Paris", 3, 21), ("Rome", 4, 25), ("Oslo", 5, 12), ("Lima", 6, 30), ("Paris", 7, 19), ("", 8, 0),
        ("", 9, 0)] * 2


def converse(client: openai.OpenAI, frontier: Any, workflow: str, conversation: str, city: str, day: int,
             temp: int) -> None:
    """One conversation of the app: the frontier answers each request as scripted, the app echoes it back."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": f"{BASE}\nToday is {day} May."},
        {"role": "user", "content": "Hi"},
    ]
    headers = {"X-Tiergate-Workflow": workflow, "X-Tiergate-Conversation": conversation}

    def ask(reply: dict[str, Any]) -> dict[str, Any]:
        frontier.script(reply)
        msg = client.chat.completions.create(
            model="gpt-4o", messages=messages, tools=TOOLS, extra_headers=headers  # type: ignore[arg-type]
        ).choices[0].message
        echoed: dict[str, Any] = {"role": "assistant", "content": msg.content}
        if msg.tool_calls:
            echoed["tool_calls"] = [c.model_dump() for c in msg.tool_calls]
        messages.append(echoed)
        return echoed

    ask({"content": "Which city would you like the weather for?"})
    if not city:
        messages.append({"role": "user", "content": "Never mind, bye."})
        ask({"content": "No problem, goodbye!"})
        return
    messages.append({"role": "user", "content": f"{city}, please."})
    call = ask({"tool_calls": [{"name": "get_weather", "arguments": {"city": city}}]})
    messages.append({"role": "tool", "tool_call_id": call["tool_calls"][0]["id"], "content": json.dumps({"temp_c": temp})})
    ask({"content": f"It is {temp} degrees in {city} today."})


def tiergate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=180, stdin=subprocess.DEVNULL)


def timeless(report: str) -> str:
    return re.sub(r"conversations in [0-9.]+ s", "conversations in - s", report)


@pytest.fixture(params=["sqlite", "postgresql"])
def captured(request: pytest.FixtureRequest, start_gateway: Any, upstreams: Any) -> Any:
    """A gateway's store holding 14 `weather` conversations and 2 `weather-trial` ones, the gateway stopped."""
    db_url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    gw = start_gateway(db_url=db_url)
    client = openai.OpenAI(base_url=gw.v1, api_key="unused", max_retries=0)
    for i, run in enumerate(RUNS):
        converse(client, upstreams["frontier"], "weather", f"w{i}", *run)
    for i, run in enumerate(RUNS[:2]):
        converse(client, upstreams["frontier"], "weather-trial", f"t{i}", *run)
    gw.stop()  # a graceful stop (SIGTERM) writes every turn accepted
    return gw


def test_mine_reads_the_workflows_captured_conversations_like_its_export(captured: Any, tmp_path: Path) -> None:
    config = str(captured.config_path)
    mined = tiergate("flowchart", "mine", "weather", "--config", config, "--out", str(tmp_path / "weather.yaml"))
    assert mined.returncode == 0, mined.stderr
    chart = yaml.safe_load((tmp_path / "weather.yaml").read_text(encoding="utf-8"))
    assert chart["name"] == "weather"  # --name defaults to the workflow's
    assert {n: v["kind"] for n, v in chart["nodes"].items()} == {
        "start": "start",
        "which_city_like_weather": "agent",
        "which_city_like_weather_answer": "decision",
        "get_weather": "tool",
        "degrees_today": "terminal",
        "no_problem_goodbye": "terminal",
    }
    assert {(e["from"], e["to"]) for e in chart["edges"]} == {
        ("start", "which_city_like_weather"),
        ("which_city_like_weather", "which_city_like_weather_answer"),
        ("which_city_like_weather_answer", "get_weather"),
        ("which_city_like_weather_answer", "no_problem_goodbye"),
        ("get_weather", "degrees_today"),
    }
    assert chart["nodes"]["get_weather"]["args"] == {"city": "{city}"}
    report = mined.stderr
    assert report.startswith("mined `weather` from 11 conversations in ")
    assert "replay fitness: 1.000 (3/3 held-out conversations fit); coverage: nodes 83%, edges 80%" in report
    assert "slot city: user -> get_weather.city" in report
    assert "check:          0 structural problem(s), 0 TODO item(s)" in report

    # the same as mining `tiergate export weather`: same chart, same report
    export = tmp_path / "export.jsonl"
    done = tiergate("export", "weather", "--out", str(export), "--config", config)
    assert done.returncode == 0, done.stderr
    assert len(export.read_text(encoding="utf-8").splitlines()) == len(RUNS)
    from_file = tiergate("flowchart", "mine", str(export), "--name", "weather", "--out", str(tmp_path / "file.yaml"))
    assert from_file.returncode == 0, from_file.stderr
    assert (tmp_path / "file.yaml").read_text(encoding="utf-8") == (tmp_path / "weather.yaml").read_text(encoding="utf-8")
    assert timeless(from_file.stderr).replace(str(tmp_path / "file.yaml"), "OUT") == timeless(report).replace(
        str(tmp_path / "weather.yaml"), "OUT")

    # the options are the file path's: mermaid to stdout, no held-out conversations
    drawn = tiergate("flowchart", "mine", "weather", "--config", config, "--to", "mermaid", "--holdout", "0")
    assert drawn.returncode == 0, drawn.stderr
    assert drawn.stdout.startswith("flowchart TD") and 'get_weather[["get_weather"]]' in drawn.stdout
    assert drawn.stderr.startswith("mined `weather` from 14 conversations") and "replay fitness" not in drawn.stderr

    # a name that is neither a file nor a workflow: one line, exit 2
    store = captured.db_url.split("@")[-1]
    unknown = tiergate("flowchart", "mine", "wether", "--config", config)
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert unknown.stderr.strip().splitlines() == [
        f"tiergate: no file `wether` and no workflow `wether` with captured conversations in {store}; "
        "run `tiergate workflows` to see names, or pass a JSONL export"
    ]

    # too few to hold one out: how many there are and the minimum, one line, exit 2; --holdout 0 mines them
    few = tiergate("flowchart", "mine", "weather-trial", "--config", config)
    assert few.returncode == 2 and few.stdout == ""
    assert few.stderr.strip().splitlines() == [
        "error: workflow `weather-trial` has 2 conversation(s) with an assistant turn; --holdout 0.2 needs at "
        "least 3 to hold one out and measure fitness: capture more, or pass --holdout 0 to mine them all "
        "without fitness"
    ]
    assert tiergate("flowchart", "mine", "weather-trial", "--config", config, "--holdout", "0").returncode == 0


def test_an_unreachable_store_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "tiergate.yaml"
    config.write_text(yaml.safe_dump({"storage": {"url": f"postgresql://tg@127.0.0.1:{free_port()}/nowhere"}}))
    done = tiergate("flowchart", "mine", "weather", "--config", str(config))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert re.fullmatch(r"tiergate: cannot read the store 127\.0\.0\.1:\d+/nowhere: OperationalError; "
                        r"check storage\.url in the config", done.stderr.strip())


def test_a_mistyped_file_name_leaves_no_store_behind(tmp_path: Path) -> None:
    store = tmp_path / "store" / "tiergate.db"
    config = tmp_path / "tiergate.yaml"
    config.write_text(yaml.safe_dump({"storage": {"url": f"sqlite:///{store}"}}))
    done = tiergate("flowchart", "mine", "exports/weathr.jsonl", "--config", str(config))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("tiergate: no file `exports/weathr.jsonl` and no workflow `exports/weathr.jsonl` "
                                  f"with captured conversations in sqlite:///{store};")
    assert not store.parent.exists()
