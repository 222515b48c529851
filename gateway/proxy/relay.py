"""Streaming: open the upstream stream and relay it to the client as it comes, accounting at the end.

    result = await stream(upstreams, accounts, plan, record, headers, t0, on_answer)
    # result.stream yields the client's SSE bytes; when it ends (or is closed, even unstarted) the
    # record is accounted and finished once, and `on_answer(reply)` runs first if the stream completed

Headers go out as 200 before the first byte, so an upstream failure mid-stream ends the stream with an
OpenAI error event instead of a status code, and the record says what happened: the upstream's error
type for an error event, `upstream_truncated` for a stream that ended without `[DONE]`,
`client_disconnected` when the client left first (the upstream connection is then dropped, which
stops the generation).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from gateway.errors import GatewayError, InternalError, UpstreamTruncated
from gateway.proxy.account import Accounts
from gateway.proxy.plan import Plan
from gateway.proxy.protocol import ChatResult, StreamAccumulator
from gateway.proxy.upstream import OpenStream, Upstreams
from gateway.store.ledger import Record

log = logging.getLogger("tiergate.chat")

OnAnswer = Callable[[dict[str, Any]], Awaitable[None]]


async def stream(
    upstreams: Upstreams,
    accounts: Accounts,
    plan: Plan,
    record: Record,
    out_headers: dict[str, str],
    t0: float,
    on_answer: OnAnswer,
) -> ChatResult:
    # a failure to open is recorded once, by the caller (service.py), like any other request error
    opened = await upstreams.open_stream(plan.model, plan.body)
    record.served_model = opened.model.name
    record.attempts += opened.attempts - 1
    out_headers["X-Tiergate-Model"] = opened.model.name
    out_headers["X-Tiergate-Tier"] = record.tier
    wants_usage = bool((plan.client_body.get("stream_options") or {}).get("include_usage"))
    relay = Relay(opened, StreamAccumulator(wants_usage), accounts, plan, record, t0, on_answer)
    return ChatResult(headers=out_headers, stream=relay)


class Relay:
    """The client's side of one stream: an async iterator of SSE bytes whose `aclose()` always settles.

    A class rather than a bare async generator: closing a generator that never started runs none of
    its code, so a client gone before the first byte would leave the upstream open and no record.
    """

    def __init__(
        self,
        opened: OpenStream,
        acc: StreamAccumulator,
        accounts: Accounts,
        plan: Plan,
        record: Record,
        t0: float,
        on_answer: OnAnswer,
    ):
        self.opened, self.acc, self.accounts = opened, acc, accounts
        self.plan, self.record, self.t0, self.on_answer = plan, record, t0, on_answer
        self._gen: AsyncIterator[bytes] | None = None
        self._settled = False

    def __aiter__(self) -> Relay:
        return self

    async def __anext__(self) -> bytes:
        if self._gen is None:
            if self._settled:
                raise StopAsyncIteration
            self._gen = self._run()
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        if self._gen is not None:
            await self._gen.aclose()  # type: ignore[attr-defined]
        if not self._settled:  # never started, or closed before its end: the client left
            await self._settle(finished=False)

    async def _run(self) -> AsyncIterator[bytes]:
        record, acc = self.record, self.acc
        finished = False
        pending = b""
        try:
            async for block in self.opened.lines:
                if record.ttfb_ms is None:
                    record.ttfb_ms = (time.perf_counter() - self.t0) * 1000
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
            if acc.error is not None:  # the client already has the upstream's own error event
                kind = acc.error.get("code") or acc.error.get("type") or "upstream_error"
                record.status, record.error_type = 502, str(kind)[:64]
                log.warning("stream from %s carried an error event: %s", self.opened.model.name, kind)
            elif not acc.done:
                raise UpstreamTruncated(
                    f"upstream `{self.opened.model.name}` ended the stream without `[DONE]`; "
                    "the answer may be incomplete"
                )
        except GatewayError as exc:  # the upstream ended it; the client is still there to be told
            record.status, record.error_type = exc.status, exc.error_type
            log.warning("stream from %s broke: %s", self.opened.model.name, exc.message)
            yield b"data: " + exc.render() + b"\n\n"
        except Exception as exc:  # a bug of ours must still leave a truthful record and an error event
            bug = InternalError("The gateway failed while relaying the stream; see its log.")
            record.status, record.error_type = bug.status, bug.error_type
            log.exception("relaying the stream from %s failed: %s", self.opened.model.name, exc)
            yield b"data: " + bug.render() + b"\n\n"
        finally:
            await self._settle(finished)

    async def _settle(self, finished: bool) -> None:
        if self._settled:
            return
        self._settled = True
        record = self.record
        if not finished and record.error_type is None:
            record.error_type = "client_disconnected"
        if self.opened.close is not None and not finished:
            self.opened.close()  # drop the upstream connection: stops the generation we won't read
        reply = self.acc.reply()
        self.accounts.account(record, self.plan, self.acc.usage, reply)
        try:
            if finished and record.error_type is None:
                await self.on_answer(reply)
        finally:
            self.accounts.finish(record, self.t0)
