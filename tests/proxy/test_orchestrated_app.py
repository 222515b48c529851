"""An unmodified orchestrated app behind the gateway: one workflow, its conversations, trimming by default,
an export that gives its conversations back as sent.

The app is written as teams write orchestrators today: every request carries the whole procedure as
one system message (with today's date and the customer's name in it), a second system message naming
the current step, the history so far and every tool schema; no tiergate headers, no ids, `base_url`
is the only change. A scripted frontier (the fake upstream) follows the step.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from typing import Any

import openai
import pytest
from tg_testing import ROOT

from gateway.proxy.identity import fingerprint_workflow

PROCEDURE = """You are the support assistant of Acme Shop. Be brief and friendly.
Procedure: find out what the customer needs (track an order or return an item).
Ask for the order number and look the order up with lookup_order.
Tracking: call track_shipment and report the carrier and the delivery date.
Returns: ask for the reason, call create_return, confirm the return number.
Always ask whether there is anything else before saying goodbye."""

STEPS = {
    "ask_intent": "Ask what the customer needs.",
    "ask_order_id": "Ask for the order number.",
    "lookup_order": "Call lookup_order with the number the customer gave.",
    "track_shipment": "Call track_shipment for the order.",
    "report_status": "Report the carrier and the delivery date.",
    "ask_reason": "Ask why the customer returns the item.",
    "create_return": "Call create_return with the order number and the reason.",
    "confirm_return": "Confirm the return number.",
    "goodbye": "Say goodbye.",
}
USED = ["lookup_order", "track_shipment", "create_return"]
NEVER = ["escalate_legal", "send_coupon", "schedule_callback"]  # offered every turn, never called
TOOLS = [
    {"type": "function", "function": {"name": n, "description": f"{n.replace('_', ' ')}.", "parameters": {
        "type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}
    for n in USED + NEVER
]
SECRET = "sk-live-4f9Qa8ZtR2mW7xLp3KdV6nB1"


class App:
    """One conversation of the scripted app; `run` drives it through the gateway and returns the record."""

    def __init__(self, seed: int, client: openai.OpenAI, frontier: Any):
        self.rng = random.Random(seed)
        self.client = client
        self.frontier = frontier
        name = self.rng.choice(["Ada Byron", "Alan Turing", "Grace Hopper", "Ken Thompson"])
        day = self.rng.randint(1, 28)
        self.order = f"A{self.rng.randint(10000, 99999)}"
        self.messages: list[dict[str, Any]] = [
            {"role": "system", "content": f"{PROCEDURE}\nToday's date: 2026-12-{day:02d}.\nCustomer name: {name}."}
        ]
        self.requests = 0
        self.workflows: list[str] = []
        self.conversations: list[str] = []
        self.last: list[dict[str, Any]] = []

    def _ask(self, step: str, reply: dict[str, Any]) -> dict[str, Any]:
        """One request at `step`: the step message joins the history, the frontier answers as scripted."""
        self.messages.append({"role": "system", "content": f"Current step: {step}. {STEPS[step]}"})
        self.frontier.script(reply)
        raw = self.client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=self.messages, tools=TOOLS
        )
        self.requests += 1
        self.workflows.append(raw.headers["x-tiergate-workflow"])
        self.conversations.append(raw.headers["x-tiergate-conversation"])
        msg = raw.parse().choices[0].message
        echoed: dict[str, Any] = {"role": "assistant", "content": msg.content}
        if msg.tool_calls:
            echoed["tool_calls"] = [c.model_dump() for c in msg.tool_calls]
        self.messages.append(echoed)
        self.last = list(self.messages)
        return echoed

    def say(self, step: str, text: str) -> None:
        self._ask(step, {"content": text})

    def call(self, step: str, result: dict[str, Any]) -> None:
        echoed = self._ask(step, {"tool_calls": [{"name": step, "arguments": {"order_id": self.order}}]})
        self.messages.append(
            {"role": "tool", "tool_call_id": echoed["tool_calls"][0]["id"], "content": json.dumps(result)}
        )

    def user(self, text: str) -> None:
        self.messages.append({"role": "user", "content": text})

    def run(self) -> list[dict[str, Any]]:
        r = self.rng
        self.user(r.choice(["Hi there.", "Hello!"]))
        self.say("ask_intent", "How can I help you today?")
        track = r.random() < 0.5
        self.user("Where is my order?" if track else "I want to return an item.")
        self.say("ask_order_id", "Sure, what is your order number?")
        extra = f" My api key is {SECRET}, if that helps." if r.random() < 0.3 else ""
        self.user(f"It's {self.order}.{extra}")
        self.call("lookup_order", {"order_id": self.order, "status": "shipped"})
        if track:
            self.call("track_shipment", {"carrier": "DHL", "eta": "3 December"})
            self.say("report_status", f"Order {self.order} is with DHL and arrives on 3 December.")
        else:
            self.say("ask_reason", "Why would you like to return it?")
            self.user("It is too small.")
            self.call("create_return", {"return_id": "R1234"})
            self.say("confirm_return", "Your return R1234 is registered.")
        self.user("No, that's all, thanks.")
        self.say("goodbye", "Thank you for contacting Acme Shop, goodbye!")
        return self.last


@pytest.fixture
def orchestrated(start_gateway, upstreams):
    gw = start_gateway(
        {
            # nothing about this app is listed: trimming reaches it through `defaults:` alone
            "defaults": {"trim": {"min_requests": 8, "holdout": 0.0}},
            "server": {"state_refresh_seconds": 0.3},
        }
    )
    client = openai.OpenAI(base_url=gw.v1, api_key="unused", max_retries=0)
    apps = [App(seed, client, upstreams["frontier"]) for seed in range(40)]
    records = [app.run() for app in apps]
    return gw, upstreams, apps, records


def test_an_orchestrated_app_is_one_workflow_trimmed_by_default_and_exported_as_sent(orchestrated):
    gw, upstreams, apps, records = orchestrated
    counts = Counter(w for app in apps for w in app.workflows)
    total = sum(counts.values())
    name, share = counts.most_common(1)[0][0], counts.most_common(1)[0][1] / total
    assert share >= 0.95, counts
    # the auto-name comes from the fingerprint, not arrival order: any process computes the same one
    first = apps[0].messages[:2] + [{"role": "system", "content": "Current step: ask_intent. Ask."}]
    assert name == fingerprint_workflow(first, TOOLS)[0]
    # one conversation per run of the app, every turn stitched to it
    assert all(len(set(app.conversations)) == 1 for app in apps)
    assert len({app.conversations[0] for app in apps}) == len(apps)

    # trimming applied through `defaults:` alone: the never-called tools stop reaching the upstream
    sent = [set(t["function"]["name"] for t in e["body"].get("tools") or []) for e in upstreams["frontier"].log()]
    assert all(n in sent[0] for n in NEVER)
    late = sent[-40:]
    assert sum(1 for tools in late if not (set(NEVER) & tools)) >= 20, late[-3:]

    gw.stop()
    rows = gw.records()
    assert len(rows) == total and {r["workflow"] for r in rows} == {name}
    assert len({r["conversation"] for r in rows}) == len(apps)
    assert sum(1 for r in rows if (r["tools_dropped"] or 0) > 0) >= 20

    out = gw.config_path.parent / "export.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "export", name, "--out", str(out), "--config", str(gw.config_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == len(apps)
    for line, record in zip(lines, records, strict=True):  # oldest first, as the app ran them
        expected = json.loads(json.dumps(record).replace(SECRET, "[redacted:secret]"))
        assert line["messages"] == expected  # turn for turn as sent: both system messages, tool calls
        assert [t["function"]["name"] for t in line["tools"]] == USED + NEVER  # as offered, not as trimmed
    assert SECRET not in out.read_text()
    assert any("[redacted:secret]" in json.dumps(line) for line in lines)


def test_the_export_is_what_compile_reads(orchestrated, tmp_path):
    from compiler.flowchart import from_dict
    from compiler.traffic import load_traffic

    gw, _ups, _apps, _records = orchestrated
    gw.stop()
    name = gw.records()[0]["workflow"]
    out = tmp_path / "traffic.jsonl"
    subprocess.run(
        [sys.executable, "-m", "gateway.cli", "export", name, "--out", str(out), "--limit", "5",
         "--config", str(gw.config_path)],
        cwd=ROOT, check=True, capture_output=True, timeout=60,
    )
    import yaml

    fc = from_dict(yaml.safe_load((ROOT / "tests" / "compiler" / "weather.yaml").read_text()))
    convs = load_traffic(out, fc)
    assert len(convs) == 5
    # compile reads every line: the chart's runtime prompt replaces both system messages, turns kept
    for conv in convs:
        assert [m["role"] for m in conv["messages"]].count("system") == 1
        assert any(m.get("tool_calls") for m in conv["messages"])


class TruncatingApp(App):
    """The same app, but it sends only the procedure and the last four messages: stitching fails."""

    def _ask(self, step: str, reply: dict[str, Any]) -> dict[str, Any]:
        full = self.messages
        self.messages = [full[0], *full[1:][-4:]]
        try:
            return super()._ask(step, reply)
        finally:
            kept = self.messages[len(self.messages) - 2:]  # the step message and the reply
            self.messages = full + kept


def test_truncated_histories_still_land_in_the_apps_workflow(start_gateway, upstreams):
    gw = start_gateway()
    client = openai.OpenAI(base_url=gw.v1, api_key="unused", max_retries=0)
    whole = App(100, client, upstreams["frontier"])
    whole.run()
    cut = [TruncatingApp(seed, client, upstreams["frontier"]) for seed in range(101, 104)]
    for app in cut:
        app.run()
    names = {w for app in [whole, *cut] for w in app.workflows}
    assert names == {whole.workflows[0]}  # one workflow: the fingerprint ignores history and step
    # stitching could not follow the cut histories: more conversations than runs, said honestly
    assert all(len(set(app.conversations)) > 1 for app in cut)
