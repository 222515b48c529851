"""`defaults:` for every workflow: shipped < defaults < the workflow's entry, per key; errors name the key."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tg_testing import ROOT

from gateway.proxy.defaults import resolve
from gateway.settings import parse_settings

MODELS = """
models:
  - {name: big, upstream: openai/gpt-4o}
  - {name: small, upstream: openai/gpt-4o-mini}
"""


def settings(extra: str = ""):
    return parse_settings(MODELS + extra, "test.yaml")


@pytest.mark.parametrize(
    ("extra", "name", "route", "trim", "capture", "propose"),
    [
        # nothing configured: the shipped defaults (no cheap model, so no routing)
        ("", "found", "off: no cheap model named", "default", "default", "default"),
        # defaults name a cheap model: every workflow routes
        ("defaults: {frontier: big, cheap: small}", "found", "default", "default", "default", "default"),
        # a listed workflow's own keys win, per key
        (
            "defaults: {trim: {min_requests: 5}}\nworkflows: [{name: w, frontier: big, cheap: small, trim: false}]",
            "w", "configured", "off in config", "default", "default",
        ),
        ("defaults: {capture: false, propose: false}", "found", "off: no cheap model named", "default",
         "off in config", "off in config"),
        ("defaults: {route: false, cheap: small, frontier: big}", "found", "off in config", "default", "default",
         "default"),
        ("workflows: [{name: w, capture: {enabled: false}}]", "w", "off: no cheap model named", "default",
         "off in config", "default"),
    ],
)
def test_where_each_rung_setting_comes_from(extra, name, route, trim, capture, propose):
    rs = resolve(settings(extra), name)
    assert (rs.why["route"], rs.why["trim"], rs.why["capture"], rs.why["propose"]) == (route, trim, capture, propose)


def test_a_mapping_merges_one_level_deep():
    s = settings("defaults: {trim: {min_requests: 7, holdout: 0.2}}\nworkflows: [{name: w, trim: {min_requests: 3}}]")
    assert (resolve(s, "w").trim.min_requests, resolve(s, "w").trim.holdout) == (3, 0.2)
    assert resolve(s, "other").trim.min_requests == 7
    capture = resolve(settings("defaults: {capture: {retention_days: 2}}"), "x").capture
    assert (capture.retention_days, capture.max_conversations, capture.redact) == (2, 10_000, ("cards",))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("defaults: {trimm: {}}", "defaults.trimm: unknown key"),
        ("defaults: {cheap: nope}", "defaults.cheap: unknown model `nope`"),
        ("defaults: {cheap: small}", "name `frontier` too"),
        ("defaults: {capture: {retention_days: -1}}", "capture.retention_days"),
        ("defaults: {propose: maybe}", "propose"),
        ("workflows: [{name: w, capture: {redact: [ssn]}}]", "capture.redact"),
    ],
)
def test_config_mistakes_stop_the_cli_with_one_line(tmp_path, extra, message):
    path = tmp_path / "bad.yaml"
    path.write_text(MODELS + extra + "\nstorage: {url: 'sqlite:///" + str(tmp_path / "x.db") + "'}\n")
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "workflows", "--config", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in done.stderr, done.stderr
