import csv
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from router.cli import register

WEAK, STRONG = "small-model", "big-model"


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.callback()
    def main() -> None:  # a root callback keeps `router` a sub-command, as in the real CLI
        pass

    return app


@pytest.fixture
def data_csv(tmp_path: Path) -> Path:
    path = tmp_path / "data.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", WEAK, STRONG, f"{WEAK}_response", f"{STRONG}_response"])
        for i in range(80):
            hard = i % 3 == 0
            prompt = (
                f"A train leaves at {i} and {i + 3} with {i * 7} seats, each 2.5 dollars, half full; how much?"
                if hard
                else f"What is {i} plus 1?"
            )
            weak_ok = (not hard) or i % 2 == 0
            answer = f"{i} + 1 = {i + 1}\n#### {i + 1}" if weak_ok else "However, I think maybe it is unclear"
            writer.writerow([prompt, str(weak_ok), "True" if i % 11 else "False", answer, "x"])
    return path


def run(app: typer.Typer, *args: str) -> object:
    return CliRunner().invoke(app, ["router", "eval", *args])


def test_eval_prints_tables(app: typer.Typer, data_csv: Path) -> None:
    result = run(
        app,
        str(data_csv),
        "--weak",
        WEAK,
        "--strong",
        STRONG,
        "--weak-price",
        "0.001",
        "--strong-price",
        "0.01",
    )
    assert result.exit_code == 0, result.output
    for fragment in (
        "Quality against share of strong calls",
        "APGR",
        "CPT(50%)",
        "CPT(80%)",
        "At target retention 0.95",
        "per 1k requests",
        "strong-only: saving",
    ):
        assert fragment in result.output


def test_eval_json_cascade_with_exclusions(app: typer.Typer, data_csv: Path, tmp_path: Path) -> None:
    exclude = tmp_path / "contaminated.jsonl"
    exclude.write_text(
        json.dumps({"eval_prompt": "What is 1 plus 1?"}) + "\n\n" + json.dumps({"prompt": "nope"}) + "\n"
    )
    result = run(
        app,
        str(data_csv),
        "--weak",
        WEAK,
        "--strong",
        STRONG,
        "--mode",
        "cascade",
        "--json",
        "--exclude",
        str(exclude),
        "--repeats",
        "2",
        "--seed",
        "3",
        "--target",
        "0.9",
        "--confidence",
        "0.8",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["mode"] == "cascade" and summary["rows"] == 79 and summary["excluded"] == 1
    assert summary["seeds"] == [3, 4] and summary["splits"] == 2 and summary["confidence"] == 0.8
    assert summary["n_train"] + summary["n_test"] == 79
    assert 0 <= summary["cpt50"] <= summary["cpt80"] <= 1
    assert summary["quality_by_strong_share"]["0.0"] == pytest.approx(summary["weak_quality"])
    assert summary["at_target"]["cost_per_1k_requests"] is None
    # the weak answers say exactly when the weak model failed: cascade finds them
    assert summary["apgr"] > 0.6


def test_eval_prompt_mode_text_mentions_ratio_without_prices(app: typer.Typer, data_csv: Path) -> None:
    result = run(app, str(data_csv), "--weak", WEAK, "--strong", STRONG, "--mode", "cascade")
    assert result.exit_code == 0, result.output
    assert "1:10 weak:strong price ratio" in result.output and "weak call is paid" in result.output


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--weak", "nope", "--strong", STRONG], "no column `nope`"),
        (["--weak", "prompt", "--strong", STRONG], "column `prompt` holds"),
        (["--weak", WEAK, "--strong", STRONG, "--target", "1.5"], "`--target 1.5` is not in (0, 1]"),
        (["--weak", WEAK, "--strong", STRONG, "--weak-price", "1"], "give both `--weak-price`"),
        (
            ["--weak", WEAK, "--strong", STRONG, "--weak-price", "2", "--strong-price", "1"],
            "below `--strong-price",
        ),
        (["--weak", WEAK, "--strong", STRONG, "--repeats", "0"], "`--repeats 0`"),
        (["--weak", WEAK, "--strong", STRONG, "--train-share", "0.99"], "too small a split"),
        (["--weak", WEAK, "--strong", STRONG, "--train-share", "1.5"], "Train share `1.5`"),
        (["--weak", WEAK, "--strong", STRONG, "--confidence", "0.2"], "Confidence `0.2`"),
    ],
)
def test_eval_bad_input_is_one_line_exit_2(
    app: typer.Typer, data_csv: Path, extra: list, fragment: str
) -> None:
    result = run(app, str(data_csv), *extra)
    assert result.exit_code == 2
    assert fragment in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_eval_bad_files(app: typer.Typer, tmp_path: Path, data_csv: Path) -> None:
    missing = run(app, str(tmp_path / "none.csv"), "--weak", WEAK, "--strong", STRONG)
    assert missing.exit_code == 2 and "Cannot read" in missing.stderr
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00bad")
    broken = run(app, str(binary), "--weak", WEAK, "--strong", STRONG)
    assert broken.exit_code == 2 and "not a UTF-8 CSV" in broken.stderr
    bad_jsonl = tmp_path / "x.jsonl"
    bad_jsonl.write_text("{not json\n")
    result = run(app, str(data_csv), "--weak", WEAK, "--strong", STRONG, "--exclude", str(bad_jsonl))
    assert result.exit_code == 2 and "line 1 is not JSON" in result.stderr
    bad_jsonl.write_text("[1]\n")
    result = run(app, str(data_csv), "--weak", WEAK, "--strong", STRONG, "--exclude", str(bad_jsonl))
    assert result.exit_code == 2 and "no `eval_prompt`" in result.stderr
    result = run(app, str(data_csv), "--weak", WEAK, "--strong", STRONG, "--exclude", str(tmp_path / "gone"))
    assert result.exit_code == 2 and "Cannot read exclusion file" in result.stderr
    no_answers = tmp_path / "no_answers.csv"
    no_answers.write_text(f"prompt,{WEAK},{STRONG}\nq,True,False\n")
    result = run(app, str(no_answers), "--weak", WEAK, "--strong", STRONG, "--mode", "cascade")
    assert result.exit_code == 2 and f"no column `{WEAK}_response`" in result.stderr


def test_router_help_lists_eval(app: typer.Typer) -> None:
    result = CliRunner().invoke(app, ["router", "--help"])
    assert result.exit_code == 0 and "eval" in result.output
