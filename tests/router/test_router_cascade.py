import json

import pytest

from router import check_cascade, compare_answers

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
REQUEST = {"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [WEATHER]}
SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
JSON_SCHEMA_REQUEST = {
    "messages": [{"role": "user", "content": "2+2 as JSON"}],
    "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}},
}
JSON_OBJECT_REQUEST = {"messages": [], "response_format": {"type": "json_object"}}


def answer(
    content: object = None, tool_calls: list | None = None, finish: str = "stop", **extra: object
) -> dict:
    message: dict = {"role": "assistant", "content": content}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    message.update({k: v for k, v in extra.items() if k != "logprobs"})
    choice: dict = {"index": 0, "message": message, "finish_reason": finish}
    if "logprobs" in extra:
        choice["logprobs"] = extra["logprobs"]
    return {"choices": [choice]}


def call(name: str, arguments: object) -> dict:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": "c", "type": "function", "function": {"name": name, "arguments": args}}


def logprobs(*values: float) -> dict:
    return {"content": [{"token": "t", "logprob": v} for v in values]}


@pytest.mark.parametrize(
    ("request_body", "response", "failed", "detail"),
    [
        (REQUEST, answer("It is sunny."), None, ""),
        (REQUEST, answer(None, [call("get_weather", {"city": "Paris", "days": 2})]), None, ""),
        (REQUEST, answer(None, [call("get_weather", "")]), "tool_arguments", "`(root)`"),
        ({"messages": []}, {"choices": []}, "no_choice", "choices[0]"),
        ({"messages": []}, {}, "no_choice", "choices[0]"),
        (REQUEST, answer("It is sun", finish="length"), "truncated", "length"),
        (REQUEST, answer("   "), "empty", "neither text"),
        (REQUEST, answer(None), "empty", "neither text"),
        (REQUEST, answer("I'm sorry, but I can't help with that."), "refusal", "refusal"),
        (REQUEST, answer("I cannot assist with this request."), "refusal", "refusal"),
        (REQUEST, answer(None, refusal="Policy"), "refusal", "`Policy`"),
        (REQUEST, answer(None, [call("get_stock", {"symbol": "X"})]), "unknown_tool", "`get_stock`"),
        (REQUEST, answer(None, [call("get_weather", "{city: Paris")]), "tool_arguments", "not JSON"),
        (REQUEST, answer(None, [call("get_weather", "[1]")]), "tool_arguments", "not a JSON object"),
        (REQUEST, answer(None, [call("get_weather", {"days": 2})]), "tool_arguments", "'city' is a required"),
        (REQUEST, answer(None, [call("get_weather", {"city": "P", "days": 0})]), "tool_arguments", "`days`"),
        ({**REQUEST, "tool_choice": "required"}, answer("Sunny."), "tool_required", "requires a tool"),
        (
            {**REQUEST, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
            answer(None, [call("get_time", {})]),
            "tool_required",
            "forces tool `get_weather`",
        ),
        (
            {**REQUEST, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
            answer(None, [call("get_weather", {"city": "Paris"})]),
            None,
            "",
        ),
        (JSON_SCHEMA_REQUEST, answer('{"answer": 4}'), None, ""),
        (JSON_SCHEMA_REQUEST, answer("The answer is 4"), "response_format", "not JSON"),
        (JSON_SCHEMA_REQUEST, answer('{"answer": "four"}'), "response_format", "`answer`"),
        (JSON_OBJECT_REQUEST, answer("[4]"), "response_format", "not an object"),
        (JSON_OBJECT_REQUEST, answer('{"a": 4}'), None, ""),
        (
            {
                "messages": [],
                "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 3}}},
            },
            answer("{}"),
            "response_format",
            "schema itself is invalid",
        ),
        (
            {
                "messages": [],
                "response_format": {"type": "json_schema", "json_schema": {"schema": {"$ref": "#/no"}}},
            },
            answer("{}"),
            "response_format",
            "could not be applied",
        ),
        (REQUEST, answer("Sunny.", logprobs=logprobs(-0.01, -0.2)), None, ""),
        (
            {**REQUEST, "tools": ["junk", WEATHER]},
            answer(None, [call("get_weather", {"city": "P"})]),
            None,
            "",
        ),
        (
            JSON_OBJECT_REQUEST,
            answer([{"type": "text", "text": '{"a":'}, {"type": "text", "text": " 1}"}]),
            None,
            "",
        ),
        (JSON_OBJECT_REQUEST, answer(3), "empty", "neither text"),
        (REQUEST, answer("Sunny.", logprobs=logprobs(-2.0, -0.1)), "low_confidence", "`-1.050`"),
        (REQUEST, answer("Sunny.", logprobs={"content": []}), None, ""),
        (
            {"messages": [], "functions": [{"name": "f", "parameters": {}}]},
            answer(None, function_call={"name": "f", "arguments": "{}"}),
            None,
            "",
        ),
    ],
)
def test_cascade_checks(request_body: dict, response: dict, failed: str | None, detail: str) -> None:
    verdict = check_cascade(request_body, response)
    assert verdict.ok == (failed is None)
    assert verdict.failed_check == failed
    assert detail in verdict.detail


def test_confidence_threshold_is_configurable() -> None:
    response = answer("Sunny.", logprobs=logprobs(-0.7))
    assert not check_cascade(REQUEST, response).ok
    assert check_cascade(REQUEST, response, min_mean_logprob=-1.0).ok


@pytest.mark.parametrize(
    ("request_body", "frontier", "cheap", "verdict", "good", "how"),
    [
        (
            REQUEST,
            answer(None, [call("get_weather", {"city": "Paris", "days": 1})]),
            answer(None, [call("get_weather", '{"days": 1,  "city": "Paris"}')]),
            None,
            True,
            "same_tool_calls",
        ),
        (
            REQUEST,
            answer(None, [call("get_weather", {"city": "Paris"})]),
            answer(None, [call("get_weather", {"city": "Lyon"})]),
            None,
            False,
            "different_tool_calls",
        ),
        (
            REQUEST,
            answer("Sunny"),
            answer(None, [call("get_weather", {"city": "Paris"})]),
            None,
            False,
            "different_tool_calls",
        ),
        (
            REQUEST,
            answer(None, [call("get_weather", {"city": "Paris"})]),
            answer("Sunny"),
            None,
            False,
            "different_tool_calls",
        ),
        (REQUEST, answer("x"), answer(None, [call("nope", {})]), None, False, "cheap_failed_unknown_tool"),
        (
            REQUEST,
            answer(None, [call("get_weather", "{broken")]),
            answer(None, [call("get_weather", {"city": "Paris"})]),
            None,
            False,
            "different_tool_calls",
        ),
        (REQUEST, answer("x"), answer("I can't help with that."), True, False, "cheap_failed_refusal"),
        (
            JSON_SCHEMA_REQUEST,
            answer('{"answer": 4}'),
            answer('{ "answer":4 }'),
            None,
            True,
            "same_structured_output",
        ),
        (
            JSON_SCHEMA_REQUEST,
            answer('{"answer": 4}'),
            answer('{"answer": 5}'),
            None,
            False,
            "different_structured_output",
        ),
        (
            JSON_SCHEMA_REQUEST,
            answer("oops"),
            answer('{"answer": 5}'),
            None,
            None,
            "frontier_output_not_json",
        ),
        (REQUEST, {"choices": []}, answer("Sunny"), None, None, "frontier_has_no_answer"),
        (REQUEST, answer("It is  sunny."), answer("It is sunny. "), None, True, "same_text"),
        (REQUEST, answer("It is sunny."), answer("Clear skies."), None, None, "needs_judge"),
        (REQUEST, answer("It is sunny."), answer("Clear skies."), True, True, "judge"),
        (REQUEST, answer("It is sunny."), answer("Clear skies."), False, False, "judge"),
    ],
)
def test_compare_answers(
    request_body: dict, frontier: dict, cheap: dict, verdict: bool | None, good: bool | None, how: str
) -> None:
    label = compare_answers(frontier, cheap, request_body, verdict=verdict)
    assert (label.good, label.how) == (good, how)
