"""Signals read off a cheap model's answer, for cascade decisions made after the cheap call.

The checks in `_cascade.py` catch answers that are broken by construction (bad JSON, unknown tool);
these graded signals feed the learned cascade scorer, which catches answers that merely look wrong:
truncated, hedging, no clear final answer, arithmetic that does not add up.
"""

from __future__ import annotations

import math
import re

__all__ = ["arithmetic_checks", "response_signals"]

_NUM = r"-?\d[\d,]*(?:\.\d+)?"
_ARITHMETIC = re.compile(rf"({_NUM})\s*([-+*/x×÷])\s*({_NUM})\s*=\s*\$?\s*({_NUM})")
_FINAL_NUMBER = re.compile(rf"(?:####|answer is|answer:|=)\s*\$?\s*{_NUM}\s*[.!]?\s*$", re.IGNORECASE)
_HEDGES = re.compile(
    r"\b(?:however|but|assum\w*|approximately|roughly|not possible|cannot|can't|unclear|actually|"
    r"perhaps|maybe|might|i think|not sure)\b",
    re.IGNORECASE,
)
_NUMBER = re.compile(_NUM)


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def arithmetic_checks(text: str) -> tuple[int, int]:
    """Count `a op b = c` steps in `text` that are right and wrong, checked with exact arithmetic."""
    right = wrong = 0
    for a, op, b, c in _ARITHMETIC.findall(text):
        x, y, z = _number(a), _number(b), _number(c)  # _NUM only matches parseable numbers
        if op in "/÷":
            if y == 0:
                continue
            value = x / y
        elif op == "+":
            value = x + y
        elif op == "-":
            value = x - y
        else:
            value = x * y
        if math.isclose(value, z, rel_tol=1e-6, abs_tol=1e-9) or round(value, 2) == z:
            right += 1
        else:
            wrong += 1
    return right, wrong


def response_signals(text: str) -> dict[str, float]:
    """Graded signals of an answer's reliability; keys are stable so stored models keep working."""
    stripped = text.strip()
    right, wrong = arithmetic_checks(stripped)
    return {
        "resp_log_chars": math.log1p(len(stripped)),
        "resp_final_number": float(bool(_FINAL_NUMBER.search(stripped))),
        "resp_has_marker": float("####" in stripped),
        "resp_ends_in_digit": float(stripped[-1:].isdigit()),
        "resp_arith_right": float(right),
        "resp_arith_wrong": float(wrong),
        "resp_any_arith_wrong": float(wrong > 0),
        "resp_hedges": float(len(_HEDGES.findall(stripped))),
        "resp_numbers": float(len(_NUMBER.findall(stripped))),
        "resp_annotations": float(stripped.count("<<")),
    }
