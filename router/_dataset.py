"""Reading labelled routing datasets (offline only: `tiergate router eval` and benchmarks)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ._eval import EvalData

__all__ = ["DatasetError", "load_eval_csv"]

_TRUE = {"true", "1", "yes", "1.0"}
_FALSE = {"false", "0", "no", "0.0"}


class DatasetError(ValueError):
    """The dataset file cannot be used as given; the message says which file, row or column."""


def _flag(value: str, path: Path, row: int, column: str) -> bool:
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise DatasetError(f"{path}: row {row}, column `{column}` holds `{value}`; use True/False or 1/0.")


def _excluded_prompts(path: Path) -> set[str]:
    prompts = set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetError(f"Cannot read exclusion file `{path}` ({exc.strerror}); check the path.") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise DatasetError(
                f"{path}: line {number} is not JSON ({exc}); write one object a line."
            ) from exc
        prompt = item.get("eval_prompt", item.get("prompt")) if isinstance(item, dict) else item
        if not isinstance(prompt, str):
            raise DatasetError(f"{path}: line {number} has no `eval_prompt` string; add one.")
        prompts.add(prompt)
    return prompts


def load_eval_csv(
    path: Path,
    weak: str,
    strong: str,
    with_responses: bool = False,
    exclude: Path | None = None,
    prompt_column: str = "prompt",
) -> tuple[EvalData, int]:
    """Load `path` (RouteLLM layout: prompt, one correctness column per model, `<model>_response`).

    Returns the data and how many rows `exclude` (JSONL of `eval_prompt`s) removed.
    """
    excluded = _excluded_prompts(exclude) if exclude else set()
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            response = f"{weak}_response"
            needed = [prompt_column, weak, strong] + ([response] if with_responses else [])
            for column in needed:
                if column not in columns:
                    hint = " (cascade mode reads the weak model's answers)" if column == response else ""
                    raise DatasetError(
                        f"{path}: no column `{column}`{hint}; columns are {', '.join(f'`{c}`' for c in columns)}."
                    )
            prompts, weak_ok, strong_ok, answers = [], [], [], []
            dropped = 0
            for number, row in enumerate(reader, 2):
                if row[prompt_column] in excluded:
                    dropped += 1
                    continue
                prompts.append(row[prompt_column])
                weak_ok.append(_flag(row[weak] or "", path, number, weak))
                strong_ok.append(_flag(row[strong] or "", path, number, strong))
                if with_responses:
                    answers.append(row[response] or "")
    except OSError as exc:
        raise DatasetError(f"Cannot read `{path}` ({exc.strerror}); check the path.") from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DatasetError(f"`{path}` is not a UTF-8 CSV file ({exc}).") from exc
    data = EvalData(
        tuple(prompts), tuple(weak_ok), tuple(strong_ok), tuple(answers) if with_responses else None
    )
    return data, dropped
