"""Transcript capture settings and redaction: what a workflow keeps of its conversations, and how secrets go.

    cfg = CaptureConfig.from_config("support", {"enabled": True, "retention_days": 30, "redact": ["emails"]})
    redactor = Redactor(cfg, extra_secrets=["tg-..."])   # the gateway's own keys are always redacted
    redactor("my key is sk-abc123...")                    # -> "my key is [redacted:secret]"

Secrets (provider API keys, bearer tokens, JWTs, private keys, the gateway's admin and upstream keys)
are always replaced, whatever the config says; emails, card and phone numbers are options (`redact:`),
and `patterns:` adds the operator's own regular expressions. Redaction runs in the capture writer's
thread, before anything reaches the store, never on the request path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from router import PolicyConfigError

CAPTURE_KEYS = frozenset({"enabled", "retention_days", "max_conversations", "redact", "patterns"})

# Always on. Each pattern is anchored on a shape real keys have, so ordinary prose is left alone, and
# runs only when its literal hints are in the lower-cased text (`in` runs at C speed; ten regexes over
# every message did not: redaction was 85% of the capture writer's time, cProfile on bench/capture).
SECRET_PATTERNS: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...] = (
    (("sk-", "rk-", "pk-"), re.compile(r"\b(?:sk|rk|pk)-(?:[A-Za-z0-9_-]+-)*[A-Za-z0-9_-]{16,}")),  # OpenAI, Anthropic
    (("tg-",), re.compile(r"\btg-[A-Za-z0-9_-]{20,}")),  # tiergate virtual keys
    (("akia", "asia"), re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")),  # AWS access key ids
    (("aiza",), re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),  # Google API keys
    (("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"), re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr|github_pat)_[A-Za-z0-9_]{20,}")),  # GitHub tokens
    (("xox",), re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}")),  # Slack tokens
    (("eyj",), re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),  # JWTs
    (("bearer",), re.compile(r"\b(?i:bearer)\s+[A-Za-z0-9._~+/=-]{16,}")),  # Authorization: Bearer ...
    (
        ("key", "secret", "token", "passw"),
        re.compile(r"\b(?i:api[_-]?key|secret|token|password|passwd)\b\s*[:=]\s*[\"']?[^\s\"',;]{8,}"),
    ),
    (("private key",), re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----")),
)
_DIGIT_RUN = re.compile(r"\d[\d .()+-]{6,}\d")  # what a card or phone number needs at least

OPTIONAL_PATTERNS: dict[str, re.Pattern[str]] = {
    "emails": re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"),
    # 13-19 digits in groups of up to 4, separated by spaces or dashes (checked with Luhn below)
    "cards": re.compile(r"\b\d(?:[ -]?\d){12,18}\b"),
    # international or national numbers of 8+ digits with the usual separators
    "phones": re.compile(r"(?<![\w+])\+?\d{1,3}?[ .-]?\(?\d{2,4}\)?(?:[ .-]?\d{2,4}){2,4}(?!\w)"),
}


def _luhn(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


@dataclass(frozen=True)
class CaptureConfig:
    enabled: bool = True
    retention_days: float | None = 30.0  # conversations last updated longer ago are removed; None keeps them
    max_conversations: int | None = 10_000  # most recent conversations kept per workflow; None: no cap
    redact: tuple[str, ...] = ()  # optional kinds from OPTIONAL_PATTERNS: emails, cards, phones
    patterns: tuple[str, ...] = ()  # extra regular expressions, replaced by [redacted:pattern]

    @classmethod
    def from_config(cls, workflow: str, section: Any) -> CaptureConfig:
        """Parse a `capture:` section; `false` turns capture off; errors name the workflow and key."""
        if section is False or section is None:
            return cls(enabled=False)
        if section is True:
            return cls()
        if not isinstance(section, Mapping):
            raise PolicyConfigError(workflow, "capture", f"expected a mapping or true/false, got `{section!r}`.")
        for key in section:
            if key not in CAPTURE_KEYS:
                raise PolicyConfigError(
                    workflow, f"capture.{key}", f"unknown key `{key}`; use one of {', '.join(sorted(CAPTURE_KEYS))}."
                )
        enabled = section.get("enabled", True)
        if not isinstance(enabled, bool):
            raise PolicyConfigError(workflow, "capture.enabled", f"`{enabled!r}` is not true or false.")
        days = section.get("retention_days", cls.retention_days)
        if days is not None and (isinstance(days, bool) or not isinstance(days, int | float) or days <= 0):
            raise PolicyConfigError(
                workflow, "capture.retention_days", f"`{days!r}` is not a positive number of days (or null)."
            )
        most = section.get("max_conversations", cls.max_conversations)
        if most is not None and (isinstance(most, bool) or not isinstance(most, int) or most < 1):
            raise PolicyConfigError(
                workflow, "capture.max_conversations", f"`{most!r}` is not a positive integer (or null)."
            )
        redact = section.get("redact", [])
        if not isinstance(redact, list) or any(k not in OPTIONAL_PATTERNS for k in redact):
            raise PolicyConfigError(
                workflow,
                "capture.redact",
                f"`{redact!r}` is not a list of {', '.join(OPTIONAL_PATTERNS)}; secrets are always redacted.",
            )
        patterns = section.get("patterns", [])
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise PolicyConfigError(workflow, "capture.patterns", f"`{patterns!r}` is not a list of regexes.")
        for p in patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise PolicyConfigError(workflow, "capture.patterns", f"`{p}` is not a regex: {exc}.") from None
        return cls(
            enabled=enabled,
            retention_days=None if days is None else float(days),
            max_conversations=most,
            redact=tuple(redact),
            patterns=tuple(patterns),
        )


class Redactor:
    """Replaces secrets (always) and the configured kinds in every string of a message, recursively."""

    def __init__(self, cfg: CaptureConfig, extra_secrets: Iterable[str] = ()):
        self._literals = sorted({s for s in extra_secrets if s and len(s) >= 8}, key=len, reverse=True)
        self._optional = [(k, OPTIONAL_PATTERNS[k]) for k in cfg.redact]
        self._custom = [re.compile(p) for p in cfg.patterns]
        self._cache: dict[str, str] = {}  # JSON text -> redacted JSON text; the writer is one thread

    def text(self, value: str) -> str:
        if len(value) < 8:  # shorter than any secret or pattern worth redacting
            return value
        for lit in self._literals:
            if lit in value:
                value = value.replace(lit, "[redacted:secret]")
        low = value.lower()
        for hints, pattern in SECRET_PATTERNS:
            if any(h in low for h in hints):
                value = pattern.sub("[redacted:secret]", value)
        numbers = bool(self._optional) and _DIGIT_RUN.search(value) is not None
        for kind, pattern in self._optional:
            if kind in ("cards", "phones") and not numbers:
                continue
            if kind == "cards":
                value = pattern.sub(lambda m: "[redacted:card]" if _luhn(m.group()) else m.group(), value)
            else:
                value = pattern.sub(f"[redacted:{kind.rstrip('s')}]", value)
        for pattern in self._custom:
            value = pattern.sub("[redacted:pattern]", value)
        return value

    def json(self, value: Any) -> str:
        """`value` as JSON text, redacted: one pass over the serialised text (C-speed dump, one regex
        sweep), falling back to a walk over its strings if a custom pattern broke the JSON."""
        raw = orjson.dumps(value).decode()
        hit = self._cache.get(raw)
        if hit is not None:
            return hit
        out = self.text(raw)
        if out != raw:
            try:
                orjson.loads(out)
            except orjson.JSONDecodeError:
                out = orjson.dumps(self(value)).decode()
        if len(raw) <= 32_768:  # the procedure, preloads and tool schemas come back in every conversation
            if len(self._cache) >= 2048:
                self._cache.clear()
            self._cache[raw] = out
        return out

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        return value

