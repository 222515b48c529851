import pytest

from router import (
    ToolUsage,
    count_prompt_tokens,
    dedupe_preloads,
    encoding_name_for,
    in_holdout,
    tools_called,
    trim_tools,
)


def tool(name: str) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"Does {name}.",
            "parameters": {"type": "object", "properties": {}},
        },
    }


TOOLS = [tool(n) for n in ("search", "refund", "escalate", "weather", "translate", "ship")]
BUSY = ToolUsage(requests_seen=100, calls={"search": 40, "ship": 3})


def names(tools: tuple) -> list[str]:
    return [t["function"]["name"] for t in tools]


@pytest.mark.parametrize(
    ("kwargs", "kept", "dropped", "reason"),
    [
        ({}, ["search", "ship"], ["refund", "escalate", "weather", "translate"], "dropped 4 tools"),
        ({"holdout": True}, None, [], "holdout"),
        ({"usage": ToolUsage(10, {"search": 1})}, None, [], "warming up: 10 of 50"),
        ({"min_requests": 200}, None, [], "warming up: 100 of 200"),
        (
            {"keep": {"escalate"}},
            ["search", "escalate", "ship"],
            ["refund", "weather", "translate"],
            "dropped 3",
        ),
        (
            {"called_in_conversation": {"refund"}},
            ["search", "refund", "ship"],
            ["escalate", "weather", "translate"],
            "dropped 3",
        ),
        (
            {"tool_choice": {"type": "function", "function": {"name": "weather"}}},
            ["search", "weather", "ship"],
            ["refund", "escalate", "translate"],
            "dropped 3",
        ),
        (
            {
                "usage": ToolUsage(
                    100, {n: 1 for n in ("search", "refund", "escalate", "weather", "translate", "ship")}
                )
            },
            None,
            [],
            "nothing to drop",
        ),
    ],
)
def test_trim_tools_table(kwargs: dict, kept: list | None, dropped: list, reason: str) -> None:
    args = {"usage": BUSY, **kwargs}
    result = trim_tools(TOOLS, **args)
    assert names(result.tools) == (kept if kept is not None else names(tuple(TOOLS)))
    assert list(result.dropped) == dropped
    assert result.reason.startswith(reason), result.reason


def test_tool_the_client_just_added_is_not_dropped_until_offered_enough() -> None:
    usage = ToolUsage()
    old = TOOLS[:3]
    for _ in range(60):
        usage = usage.record(offered=names(tuple(old)), called=["search"])
    new_catalogue = [*old, tool("gift_cards")]
    for _ in range(49):
        usage = usage.record(offered=names(tuple(new_catalogue)), called=["search"])
        assert "gift_cards" not in trim_tools(new_catalogue, usage).dropped
    usage = usage.record(offered=names(tuple(new_catalogue)), called=["search"])
    assert usage.offers["gift_cards"] == 50 and usage.offers["search"] == 110
    assert trim_tools(new_catalogue, usage).dropped == ("refund", "escalate", "gift_cards")


def test_unnamed_tools_are_kept_and_legacy_tool_choice() -> None:
    odd = [{"type": "code_interpreter"}, tool("search"), tool("refund")]
    result = trim_tools(odd, BUSY, tool_choice={"name": "refund"})
    assert result.tools == tuple(odd) and result.dropped == ()


def test_newly_needed_tool_is_restored_through_holdout_traffic() -> None:
    usage = ToolUsage()
    for _ in range(60):
        usage = usage.record(offered=names(tuple(TOOLS)), called=["search"])
    assert "refund" in trim_tools(TOOLS, usage).dropped
    # a holdout conversation sees all tools and the model calls `refund`: the gateway records it
    holdout = trim_tools(TOOLS, usage, holdout=True)
    assert "refund" in names(holdout.tools)
    usage = usage.record(offered=names(tuple(TOOLS)), called=["refund"])
    restored = trim_tools(TOOLS, usage)
    assert "refund" in names(restored.tools) and "refund" not in restored.dropped
    assert names(restored.tools) == ["search", "refund"]  # original order kept
    assert ToolUsage.from_dict(usage.to_dict()) == usage


def test_tools_called() -> None:
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"function": {"name": "search"}}, {"function": {}}, "junk"]},
        {"role": "assistant", "function_call": {"name": "legacy"}},
        {"role": "tool", "content": "{}"},
        "junk",
    ]
    assert tools_called(messages) == {"search", "legacy"}  # type: ignore[arg-type]


def test_in_holdout_is_deterministic_and_near_its_share() -> None:
    draws = [in_holdout(f"conv-{i}", 0.1) for i in range(5000)]
    assert draws == [in_holdout(f"conv-{i}", 0.1) for i in range(5000)]
    assert 0.08 < sum(draws) / len(draws) < 0.12
    assert not in_holdout("x", 0) and in_holdout("x", 1.0)


DOC = "\n\n".join(
    f"Section {i}. " + "Refunds are allowed within thirty days of purchase. " * 6 for i in range(5)
)
SYSTEM = "You are the claims agent. Follow the procedure exactly. " * 30


def test_dedupe_preloads_keeps_first_copy_and_last_user_turn() -> None:
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Here is the policy:\n\n" + DOC + "\n\nCan I get a refund?"},
        {"role": "assistant", "content": "Yes."},
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": [{"type": "text", "text": "Again:\n\n" + DOC}, {"type": "image_url"}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
        {"role": "user", "content": SYSTEM + "\n\n" + DOC},
    ]
    result = dedupe_preloads(messages, min_chars=500)
    out = result.messages
    assert len(out) == len(messages) and [m["role"] for m in out] == [m["role"] for m in messages]
    assert out[0] is messages[0] and out[1] is messages[1]  # first copies untouched
    assert out[3]["content"].startswith("[tiergate: ") and "see message 0" in out[3]["content"]
    text = out[4]["content"][0]["text"]
    assert text.startswith("Again:\n\n[tiergate: ") and "see message 1" in text and "Section" not in text
    assert out[4]["content"][1] == {"type": "image_url"}
    assert out[5] is messages[5]
    assert out[6] is messages[6]  # the last user turn is never touched
    assert result.removed_blocks == 2
    assert result.removed_chars == len(SYSTEM) + len(DOC)


def test_dedupe_preloads_leaves_small_or_unique_blocks() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"},
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "bye"},
    ]
    result = dedupe_preloads(messages, min_chars=5)
    assert result.messages == tuple(messages) and result.removed_blocks == 0
    repeated = [{"role": "system", "content": "A" * 150}, {"role": "system", "content": "A" * 150}]
    assert dedupe_preloads(repeated, min_chars=200).removed_blocks == 0
    assert dedupe_preloads(repeated, min_chars=10).removed_blocks == 1  # no user turn at all
    assert (
        dedupe_preloads([{"role": "system", "content": "A" * 50}] * 2, min_chars=10).removed_blocks == 0
    )  # marker longer


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("openai/gpt-4o-mini", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("anthropic/claude-sonnet-4", "cl100k_base"),
    ],
)
def test_encoding_name_for(model: str, encoding: str) -> None:
    assert encoding_name_for(model) == encoding


def test_count_prompt_tokens() -> None:
    messages = [{"role": "user", "content": "hello world"}]
    base = count_prompt_tokens(messages, None, "gpt-4o")
    assert base == 3 + 3 + 1 + 2  # priming + framing + role + two tokens of text
    with_tools = count_prompt_tokens(messages, TOOLS, "gpt-4o")
    assert with_tools - base > 20 * len(TOOLS) / 2
    named = [
        {"role": "user", "name": "ann", "content": "hello world"},
        {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "search"}}]},
    ]
    assert count_prompt_tokens(named, None, "gpt-4") > base
    assert count_prompt_tokens([{"role": "user", "content": "<|endoftext|>"}], None, "gpt-4") > 0


def test_dedupe_preloads_keeps_blank_lines_around_a_removed_run() -> None:
    block = "\n\n".join(["Clause one. " * 20, "Clause two. " * 20])
    messages = [
        {"role": "system", "content": block},
        {"role": "system", "content": "Intro.\n\n" + block + "\n\n\n"},
        {"role": "user", "content": "ok?"},
    ]
    out = dedupe_preloads(messages, min_chars=100).messages[1]["content"]
    assert out.startswith("Intro.\n\n[tiergate: ") and out.endswith("see message 0]\n\n\n")


# ---------------------------------------------------------------- the helper tool (issue 13)

from router import LOAD_TOOLS, helper_requests, load_tools_helper, offer_tools  # noqa: E402


def listed(helper: dict) -> list[str]:
    return helper["function"]["description"].split(": ", 1)[1].split(". ")[0].split(", ")


@pytest.mark.parametrize(
    ("keep", "sent", "left_out"),
    [
        ({"search", "ship"}, ["search", "ship", LOAD_TOOLS], ["refund", "escalate", "weather", "translate"]),
        ({"ship"}, ["ship", LOAD_TOOLS], ["search", "refund", "escalate", "weather", "translate"]),
        (set(), [LOAD_TOOLS], ["search", "refund", "escalate", "weather", "translate", "ship"]),
        ({"search", "refund", "escalate", "weather", "translate", "ship"}, names(tuple(TOOLS)), None),
    ],
)
def test_offer_tools_keeps_order_and_the_helper_lists_exactly_the_tools_left_out(keep, sent, left_out):
    out = offer_tools(TOOLS, keep)
    assert names(tuple(out)) == sent
    if left_out is None:
        assert out == TOOLS
    else:
        assert listed(out[-1]) == left_out and out[-1] == load_tools_helper(left_out)


def test_offer_tools_is_stable_whatever_order_keep_comes_in():
    """The bytes sent depend on the kept set, never on how it was built: prompt caches keep hitting."""
    import json

    a = offer_tools(TOOLS, ["ship", "search"])
    b = offer_tools(TOOLS, {"search", "ship"})
    c = offer_tools(list(TOOLS), frozenset(["search", "ship", "search"]))
    assert json.dumps(a) == json.dumps(b) == json.dumps(c)
    assert offer_tools(TOOLS, {"search"}, helper=False) == [TOOLS[0]]
    assert TOOLS[0].get("cache_control") is None  # the client's dicts are not touched


MARK = {"type": "ephemeral"}


@pytest.mark.parametrize(
    ("marked", "keep", "expect"),
    [
        ("ship", {"search", "refund"}, LOAD_TOOLS),  # the list's last breakpoint moves to its new end
        ("weather", {"search", "refund", "ship"}, "refund"),  # a middle one to the nearest tool before it
        ("search", {"refund", "ship"}, "refund"),  # nothing before it: the first tool sent
        ("ship", {"ship"}, "ship"),  # kept: stays where it is
    ],
)
def test_cache_markers_of_removed_tools_move_to_a_tool_that_is_sent(marked, keep, expect):
    tools = [({**t, "cache_control": MARK} if t["function"]["name"] == marked else t) for t in TOOLS]
    out = offer_tools(tools, keep)
    carrying = [t["function"]["name"] for t in out if t.get("cache_control")]
    assert carrying == [expect]


def test_markers_never_multiply():
    tools = [{**t, "cache_control": MARK} for t in TOOLS]
    out = offer_tools(tools, {"search"})
    assert sum(1 for t in out if t.get("cache_control")) <= sum(1 for t in tools if t.get("cache_control"))
    assert [t["function"]["name"] for t in out if t.get("cache_control")] == ["search", LOAD_TOOLS]


def call(name: str, arguments: str) -> dict:
    return {"id": "c", "type": "function", "function": {"name": name, "arguments": arguments}}


@pytest.mark.parametrize(
    ("calls", "asked"),
    [
        ([], None),
        ([call("refund", "{}")], None),
        ([call(LOAD_TOOLS, '{"names": ["refund", "ship"]}')], ("refund", "ship")),
        ([call(LOAD_TOOLS, '{"names": "refund"}')], ("refund",)),
        ([call("search", "{}"), call(LOAD_TOOLS, '{"names": ["refund"]}')], ("refund",)),  # mixed
        ([call(LOAD_TOOLS, '{"names": ["a"]}'), call(LOAD_TOOLS, '{"names": ["a", "b"]}')], ("a", "b")),
        ([call(LOAD_TOOLS, "not json")], ()),  # unreadable: the caller loads everything
        ([call(LOAD_TOOLS, "{}")], ()),
    ],
)
def test_helper_requests_reads_the_names_asked_for(calls, asked):
    assert helper_requests({"role": "assistant", "tool_calls": calls}) == asked


def test_trim_tools_keeps_what_the_conversation_loaded():
    result = trim_tools(TOOLS, BUSY, loaded={"weather"})
    assert names(result.tools) == ["search", "weather", "ship"]
    assert result.dropped == ("refund", "escalate", "translate")
