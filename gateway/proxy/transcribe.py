"""Transcript capture on the request path: one cheap call per answered request; the writer does the rest.

    capture = Capture(settings, writer, secrets=known_secrets(settings))
    capture.after(ident, client_body, reply)   # queued; redacted and stored in the writer's thread

Nothing is copied or serialised here (the bodies are not mutated after the answer), so capture adds a
queue put to a request: bench/overhead measures it (docs/benchmarks.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.proxy.capture import Redactor
from gateway.proxy.defaults import resolve
from gateway.proxy.identity import Identity
from gateway.settings import Settings
from gateway.store.transcripts import TranscriptWriter, Turn


class Capture:
    """The request path's side of capture: one cheap call per answered request, nothing serialised here.

        capture = Capture(settings, writer, secrets=[admin_key, upstream keys])
        capture.after(ident, client_body, reply)     # queued; the writer redacts and stores it
    """

    def __init__(self, settings: Settings, writer: TranscriptWriter, secrets: Iterable[str] = ()):
        self._settings = settings
        self._writer = writer
        self._secrets = tuple(secrets)
        self._redactors: dict[str, Redactor | None] = {}

    def redactor(self, workflow: str) -> Redactor | None:
        """The workflow's redactor, or None when its capture is off (cached; bounded)."""
        if workflow in self._redactors:
            return self._redactors[workflow]
        if len(self._redactors) > 5000:
            self._redactors.clear()
        cfg = resolve(self._settings, workflow).capture
        red = Redactor(cfg, self._secrets) if cfg.enabled else None
        self._redactors[workflow] = red
        return red

    def after(self, ident: Identity, body: Mapping[str, Any], reply: Any) -> None:
        red = self.redactor(ident.workflow)
        if red is None:
            return
        self._writer.submit(
            Turn(
                ident.workflow, ident.conversation, ident.turn, time.time(), body["messages"], ident.continued,
                body.get("tools"), reply, red.json,
            )
        )


def known_secrets(settings: Settings) -> list[str]:
    """The gateway's own secrets (admin key, upstream keys) as literals every redactor replaces."""
    out = [settings.admin_key or ""]
    for m in settings.models:
        if m.api_key_env:
            out.append(os.environ.get(m.api_key_env, ""))
    return [s for s in out if s]
