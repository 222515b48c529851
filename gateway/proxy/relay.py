"""Streaming: open the upstream stream and relay it to the client as it comes, accounting at the end.

    result = await stream(upstreams, accounts, plan, record, headers, t0, on_answer)
    # result.stream yields the client's SSE bytes; when it ends the record is accounted and finished,
    # and `on_answer(reply)` runs first if the stream completed (conversation stitching, learning)

Headers go out as 200 before the first byte, so an upstream failure mid-stream ends the stream with an
OpenAI error event instead of a status code; a client that disconnects drops the upstream connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from gateway.errors import GatewayError
from gateway.proxy.account import Accounts
from gateway.proxy.plan import Plan
from gateway.proxy.protocol import ChatResult, StreamAccumulator
from gateway.proxy.upstream import OpenStream, Upstreams
from gateway.store.ledger import Record

log = logging.getLogger("tiergate.chat")


async def stream(
    upstreams: Upstreams,
    accounts: Accounts,
    plan: Plan,
    record: Record,
    out_headers: dict[str, str],
    t0: float,
    on_answer: Callable[[dict[str, Any]], Awaitable[None]],
) -> ChatResult:
    try:
        opened = await upstreams.open_stream(plan.model, plan.body)
    except GatewayError as exc:
        accounts.finish_error(record, exc, t0)
        raise
    record.served_model = opened.model.name
    record.attempts += opened.attempts - 1
    out_headers["X-Tiergate-Model"] = opened.model.name
    out_headers["X-Tiergate-Tier"] = record.tier
    wants_usage = bool((plan.client_body.get("stream_options") or {}).get("include_usage"))
    acc = StreamAccumulator(wants_usage)
    return ChatResult(headers=out_headers, stream=relay(opened, acc, accounts, plan, record, t0, on_answer))


async def relay(
    opened: OpenStream,
    acc: StreamAccumulator,
    accounts: Accounts,
    plan: Plan,
    record: Record,
    t0: float,
    on_answer: Callable[[dict[str, Any]], Awaitable[None]],
) -> AsyncIterator[bytes]:
    finished = False
    pending = b""
    try:
        async for block in opened.lines:
            if record.ttfb_ms is None:
                record.ttfb_ms = (time.perf_counter() - t0) * 1000
            pending += block
            if b"\n" not in pending:
                continue
            *complete, pending = pending.split(b"\n")
            out = acc.reframe(complete)
            if out:
                yield out
        if pending.strip():
            out = acc.reframe([pending])
            if out:
                yield out
        finished = True
    except GatewayError as exc:
        record.error_type = exc.error_type  # headers went out as 200: the client sees a cut stream
        log.warning("stream from %s broke: %s", opened.model.name, exc.message)
        yield b"data: " + exc.render() + b"\n\n"
    finally:
        if not finished and record.error_type is None:
            record.error_type = "client_disconnected"
        if opened.close is not None and not finished:
            opened.close()  # drop the upstream connection: stops the generation we won't read
        reply = acc.reply()
        accounts.account(record, plan, acc.usage, reply)
        if finished:
            await on_answer(reply)
        accounts.finish(record, t0)
