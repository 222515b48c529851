import pytest

from router import RequestFeatures, response_signals
from router._features import message_text, text_stats, tool_names
from router._signals import arithmetic_checks

TOOLS = [
    {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "refund"}},
]

CONVERSATION = {
    "messages": [
        {"role": "system", "content": "You are a support agent."},
        {"role": "user", "content": "Where is order 42?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "search", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "shipped"},
        {"role": "assistant", "content": "It shipped."},
        {"role": "user", "content": [{"type": "text", "text": "Refund it please"}, {"type": "image_url"}]},
    ],
    "tools": TOOLS,
}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"messages": [{"role": "user", "content": "Hi there"}]},
            {
                "turn_index": 0,
                "tools_present": False,
                "tool_calls_so_far": 0,
                "last_user_message": "Hi there",
                "message_count": 1,
            },
        ),
        (
            CONVERSATION,
            {
                "turn_index": 1,
                "tools_present": True,
                "tool_calls_so_far": 1,
                "last_user_message": "Refund it please",
                "tool_names": ("search", "refund"),
                "message_count": 6,
            },
        ),
        (
            {"messages": [{"role": "system", "content": "x"}], "functions": [{"name": "legacy"}]},
            {"turn_index": 0, "tools_present": True, "last_user_message": "", "tool_names": ("legacy",)},
        ),
        (
            {"messages": [{"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}]},
            {"tool_calls_so_far": 1},
        ),
    ],
)
def test_from_request(body: dict, expected: dict) -> None:
    features = RequestFeatures.from_request(body)
    for key, value in expected.items():
        assert getattr(features, key) == value, key


def test_recent_text_keeps_only_recent_turns() -> None:
    body = {"messages": [{"role": "user", "content": f"turn {i}"} for i in range(10)]}
    features = RequestFeatures.from_request(body, recent_turns=2)
    assert features.recent_text == "turn 8\nturn 9"
    assert features.turn_index == 9
    assert features.prompt_tokens >= 10


@pytest.mark.parametrize("messages", [None, "hello", 3])
def test_from_request_rejects_bad_messages(messages: object) -> None:
    with pytest.raises(ValueError, match="`messages`"):
        RequestFeatures.from_request({"messages": messages})


def test_numeric_keys_are_stable() -> None:
    numeric = RequestFeatures.from_prompt(
        "Tom has 3 apples and buys 2.5 more for $4. What percent?"
    ).numeric()
    assert numeric["last_user_numbers"] == 3
    assert numeric["last_user_money"] == 1
    assert numeric["turn_index"] == 0
    assert set(numeric) == set(RequestFeatures.from_prompt("").numeric())


def test_helpers() -> None:
    assert message_text({"content": None}) == ""
    assert message_text({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}) == "a\nb"
    assert tool_names([{"name": "x"}, "junk", {"function": {"name": "y"}}]) == ("x", "y")  # type: ignore[list-item]
    assert text_stats("1,000 and 2")["log_largest_number"] > 6


@pytest.mark.parametrize(
    ("text", "right", "wrong"),
    [
        ("3 * 4 = 12 and 12 + 1 = 13", 2, 0),
        ("10 / 4 = 2.5, 10 - 3 = 6", 1, 1),
        ("5 x 2 = 11", 0, 1),
        ("1 / 0 = 3", 0, 0),
        ("no arithmetic", 0, 0),
    ],
)
def test_arithmetic_checks(text: str, right: int, wrong: int) -> None:
    assert arithmetic_checks(text) == (right, wrong)


def test_response_signals() -> None:
    good = response_signals("She has 3 + 4 = 7 eggs.\n#### 7")
    assert good["resp_final_number"] == 1 and good["resp_has_marker"] == 1 and good["resp_arith_right"] == 1
    cut = response_signals("The house is worth 80,000 + 50,000 = 130,00")
    assert cut["resp_any_arith_wrong"] == 1
    hedgy = response_signals("However, I think maybe it is 3")
    assert hedgy["resp_hedges"] >= 3
