"""Checks on a cheap model's answer (cascade escalation) and shadow-label comparison.

Both take OpenAI request/response bodies as plain dicts: the gateway has them already and no
wire model is needed to read the few fields these checks look at.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CascadeVerdict", "ShadowLabel", "check_cascade", "compare_answers"]

_REFUSAL = re.compile(
    r"^\s*(?:i'?m sorry,? but |sorry,? but |unfortunately,? )?i\s*(?:can(?:no|')?t|cannot|am unable to|'m unable to|"
    r"won'?t be able to|am not able to)\s+(?:help|assist|comply|provide|do that|answer|fulfil)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class CascadeVerdict:
    """Whether the cheap answer may be returned; when not, which check failed and why.

    `failed_check` is one of: `no_choice`, `truncated`, `empty`, `refusal`, `unknown_tool`,
    `tool_arguments`, `tool_required`, `response_format`, `low_confidence`.
    """

    ok: bool
    failed_check: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class ShadowLabel:
    """Whether the cheap answer was as good as the frontier's, and how that was decided.

    `good` is None when no automatic comparison applies (free text) and no judge verdict was
    given: the gateway should ask its judge, or drop the sample, but not guess.
    """

    good: bool | None
    how: str


def _message(response: Mapping[str, Any]) -> tuple[Mapping[str, Any] | None, Mapping[str, Any]]:
    choices = response.get("choices")
    if not isinstance(choices, Sequence) or not choices or not isinstance(choices[0], Mapping):
        return None, {}
    choice = choices[0]
    message = choice.get("message")
    return (message if isinstance(message, Mapping) else {}), choice


def _tool_calls(message: Mapping[str, Any]) -> list[tuple[str, str]]:
    calls = []
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            calls.append((str(function.get("name")), str(function.get("arguments") or "")))
    legacy = message.get("function_call")
    if isinstance(legacy, Mapping):
        calls.append((str(legacy.get("name")), str(legacy.get("arguments") or "")))
    return calls


def _schemas(request: Mapping[str, Any]) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for tool in request.get("tools") or request.get("functions") or ():
        if not isinstance(tool, Mapping):
            continue
        nested = tool.get("function")
        function: Mapping[str, Any] = nested if isinstance(nested, Mapping) else tool
        name = function.get("name")
        if isinstance(name, str):
            schemas[name] = function.get("parameters")
    return schemas


def _schema_error(instance: Any, schema: Any) -> str | None:
    """First validation error of `instance` against JSON `schema`, or None.

    The schema is not meta-validated up front: `check_schema` costs ~1 ms a call, the whole budget
    of a decision. A broken schema shows up as an exception while validating, and only then is it
    meta-validated, to say what is wrong with it.
    """
    if not isinstance(schema, Mapping) or not schema:
        return None
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(schema)
    try:
        error = jsonschema.exceptions.best_match(validator_cls(schema).iter_errors(instance))
    except Exception as exc:  # a malformed schema fails in arbitrary ways inside the validator
        try:
            validator_cls.check_schema(schema)
        except jsonschema.SchemaError as schema_error:
            return f"the schema itself is invalid ({schema_error.message})"
        return f"the schema could not be applied ({type(exc).__name__}: {exc})"
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"{error.message} at `{where}`"


def _text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    return ""


def check_cascade(
    request_body: Mapping[str, Any], response_body: Mapping[str, Any], min_mean_logprob: float = -0.5
) -> CascadeVerdict:
    """Run every check a cheap answer must pass before it is returned instead of escalating.

    Example::

        verdict = check_cascade(request, cheap_response)
        if not verdict.ok:
            ...  # call the frontier, record verdict.failed_check

    Low confidence uses the mean token log-probability of the answer when the provider returned
    `logprobs` (mean below `min_mean_logprob`, default -0.5, i.e. a geometric-mean token
    probability under ~0.61).
    """
    message, choice = _message(response_body)
    if message is None:
        return CascadeVerdict(False, "no_choice", "the response has no `choices[0]`")
    if choice.get("finish_reason") == "length":
        return CascadeVerdict(False, "truncated", "finish_reason is `length`: the answer was cut off")
    calls = _tool_calls(message)
    text = _text(message)
    if calls:
        forced = request_body.get("tool_choice")
        function = forced.get("function") if isinstance(forced, Mapping) else None
        wanted = function.get("name") if isinstance(function, Mapping) else None
        if isinstance(wanted, str) and wanted not in {name for name, _ in calls}:
            return CascadeVerdict(
                False, "tool_required", f"the request forces tool `{wanted}` and it was not called"
            )
        schemas = _schemas(request_body)
        for name, arguments in calls:
            if name not in schemas:
                return CascadeVerdict(
                    False, "unknown_tool", f"tool `{name}` is not among the request's tools"
                )
            try:
                args = json.loads(arguments) if arguments.strip() else {}
            except ValueError as exc:
                return CascadeVerdict(False, "tool_arguments", f"arguments of `{name}` are not JSON ({exc})")
            if not isinstance(args, dict):
                return CascadeVerdict(False, "tool_arguments", f"arguments of `{name}` are not a JSON object")
            error = _schema_error(args, schemas[name])
            if error:
                return CascadeVerdict(
                    False, "tool_arguments", f"arguments of `{name}` do not validate: {error}"
                )
    else:
        refusal = message.get("refusal")
        if refusal:
            return CascadeVerdict(False, "refusal", f"the model refused: `{str(refusal)[:80]}`")
        if not text.strip():
            return CascadeVerdict(False, "empty", "the answer has neither text nor tool calls")
        if _REFUSAL.search(text[:300]):
            return CascadeVerdict(False, "refusal", f"the answer reads as a refusal: `{text.strip()[:80]}`")
        choice_setting = request_body.get("tool_choice")
        if choice_setting == "required" or isinstance(choice_setting, Mapping):
            return CascadeVerdict(
                False, "tool_required", "the request requires a tool call and none was made"
            )
        response_format = request_body.get("response_format")
        if isinstance(response_format, Mapping) and response_format.get("type") in (
            "json_object",
            "json_schema",
        ):
            try:
                parsed = json.loads(text)
            except ValueError as exc:
                return CascadeVerdict(False, "response_format", f"the answer is not JSON ({exc})")
            if response_format["type"] == "json_object" and not isinstance(parsed, dict):
                return CascadeVerdict(False, "response_format", "the answer is JSON but not an object")
            spec = response_format.get("json_schema")
            if isinstance(spec, Mapping):
                error = _schema_error(parsed, spec.get("schema"))
                if error:
                    return CascadeVerdict(
                        False, "response_format", f"the answer does not match the schema: {error}"
                    )
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, Mapping) else None
    if isinstance(content, Sequence) and content:
        raw = [t.get("logprob") for t in content if isinstance(t, Mapping)]
        values = [float(v) for v in raw if isinstance(v, int | float)]
        if values:
            mean = sum(values) / len(values)
            if mean < min_mean_logprob:
                return CascadeVerdict(
                    False, "low_confidence", f"mean token logprob `{mean:.3f}` is below `{min_mean_logprob}`"
                )
    return CascadeVerdict(True)


def _normalise_calls(calls: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
    result = []
    for name, arguments in calls:
        try:
            args = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            return None
        result.append((name, json.dumps(args, sort_keys=True)))
    return sorted(result)


def compare_answers(
    frontier_response: Mapping[str, Any],
    cheap_response: Mapping[str, Any],
    request_body: Mapping[str, Any],
    verdict: bool | None = None,
) -> ShadowLabel:
    """Label a shadow pair: was the cheap answer as good as the frontier's?

    Example::

        label = compare_answers(frontier_resp, cheap_resp, request)   # ShadowLabel(True, "same_tool_calls")
        if label.good is None:
            label = compare_answers(frontier_resp, cheap_resp, request, verdict=judge_says_ok)

    Tool calls must match in names and arguments (order-free), structured output must be equal as
    JSON; a judge `verdict` (the gateway's I/O) decides free text. A cheap answer that fails
    `check_cascade` is never good.
    """
    cheap_check = check_cascade(request_body, cheap_response)
    if not cheap_check.ok:
        return ShadowLabel(False, f"cheap_failed_{cheap_check.failed_check}")
    frontier_message, _ = _message(frontier_response)
    cheap_message, _ = _message(cheap_response)
    assert cheap_message is not None  # check_cascade returned ok
    if frontier_message is None:
        return ShadowLabel(None, "frontier_has_no_answer")
    frontier_calls, cheap_calls = _tool_calls(frontier_message), _tool_calls(cheap_message)
    if frontier_calls or cheap_calls:
        same = _normalise_calls(frontier_calls) == _normalise_calls(cheap_calls) and frontier_calls
        return ShadowLabel(bool(same), "same_tool_calls" if same else "different_tool_calls")
    response_format = request_body.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type") in ("json_object", "json_schema"):
        try:
            frontier_json = json.loads(_text(frontier_message))
        except ValueError:
            return ShadowLabel(None, "frontier_output_not_json")
        same = frontier_json == json.loads(_text(cheap_message))
        return ShadowLabel(same, "same_structured_output" if same else "different_structured_output")
    if verdict is not None:
        return ShadowLabel(bool(verdict), "judge")
    if " ".join(_text(frontier_message).split()) == " ".join(_text(cheap_message).split()):
        return ShadowLabel(True, "same_text")
    return ShadowLabel(None, "needs_judge")
