"""Redaction before storage, table-driven: secrets always, optional kinds only when configured."""

from __future__ import annotations

import json

import pytest

from gateway.proxy.capture import CaptureConfig, Redactor
from router import PolicyConfigError

ALL = CaptureConfig(redact=("emails", "cards", "phones"), patterns=(r"ACME-\d{6}",))


@pytest.mark.parametrize(
    ("text", "cfg", "gone", "mark"),
    [
        ("my key is sk-proj-Zq7XkP2mN9vB4cL8dF1gH6jK3sT5wY0e ok", CaptureConfig(), "sk-proj-Zq7X", "secret"),
        ("anthropic sk-ant-api03-abcdefghijklmnopqrstuvwxyz012345", CaptureConfig(), "sk-ant-api03", "secret"),
        ("virtual key tg-AbCdEfGhIjKlMnOpQrStUvWxYz0123", CaptureConfig(), "tg-AbCdEf", "secret"),
        ("Authorization: Bearer abcdefghijklmnopqrstuv", CaptureConfig(), "abcdefghijklmnop", "secret"),
        ("aws AKIAIOSFODNN7EXAMPLE here", CaptureConfig(), "AKIAIOSFODNN7EXAMPLE", "secret"),
        ("gh token ghp_abcdefghijklmnopqrstuvwxyz0123456789", CaptureConfig(), "ghp_abcdef", "secret"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJlMTIz", CaptureConfig(), "eyJhbGci", "secret"),
        ("password = hunter2hunter2", CaptureConfig(), "hunter2hunter2", "secret"),
        ("mail ada@example.com", ALL, "ada@example.com", "email"),
        ("card 4111 1111 1111 1111 thanks", ALL, "4111 1111 1111 1111", "card"),
        ("call +44 20 7946 0958 today", ALL, "7946 0958", "phone"),
        ("ref ACME-123456", ALL, "ACME-123456", "pattern"),
    ],
)
def test_redaction_replaces(text, cfg, gone, mark):
    out = Redactor(cfg)(text)
    assert gone not in out and f"[redacted:{mark}]" in out


@pytest.mark.parametrize(
    "text",
    [
        "mail ada@example.com",  # emails only when configured
        "card 4111 1111 1111 1111",
        "Your order A12345 ships on 3 December; the token of thanks is a coupon.",
        "ask-the-customer for the task-force number",
    ],
)
def test_no_optional_kinds_by_default_and_prose_is_left_alone(text):
    assert Redactor(CaptureConfig())(text) == text


def test_luhn_keeps_numbers_that_are_not_cards():
    assert Redactor(CaptureConfig(redact=("cards",)))("order 1234 5678 9012 3456") == "order 1234 5678 9012 3456"


def test_the_gateways_own_keys_are_replaced_as_literals_and_json_stays_valid():
    red = Redactor(CaptureConfig(patterns=(r'"',)), extra_secrets=["admin-key-value-1"])
    msg = {"role": "user", "content": "admin-key-value-1 and {\"nested\": \"sk-abcdefghijklmnopqrstuvwx\"}"}
    body = red.json(msg)  # the custom pattern breaks JSON text: the walk over strings takes over
    parsed = json.loads(body)
    assert "admin-key-value-1" not in body and "sk-abcdefghijklmnop" not in body
    assert parsed["role"] == "user"


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"enabled": "yes"}, "capture.enabled"),
        ({"retention_days": 0}, "capture.retention_days"),
        ({"max_conversations": 0}, "capture.max_conversations"),
        ({"redact": ["ssn"]}, "capture.redact"),
        ({"patterns": ["("]}, "capture.patterns"),
        ({"keep": 1}, "capture.keep"),
        ("on", "capture"),
    ],
)
def test_capture_config_errors_name_the_key(section, key):
    with pytest.raises(PolicyConfigError, match=key.replace(".", r"\.")):
        CaptureConfig.from_config("support", section)


def test_capture_config_shorthands():
    assert CaptureConfig.from_config("w", False).enabled is False
    assert CaptureConfig.from_config("w", True) == CaptureConfig()
    assert CaptureConfig.from_config("w", {"retention_days": None}).retention_days is None
