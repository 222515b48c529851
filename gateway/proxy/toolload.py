"""Trimming's helper tool, answered inside the gateway: the client never sees `tiergate_load_tools`.

    ups = ToolLoader(upstreams, accounts, plan, record)      # when `plan.helper`
    done = await ups.complete(plan.model, plan.body)          # helper calls resolved; the next answer returned
    opened = await ups.open_stream(plan.model, plan.body)     # the same for streams: no helper chunk relayed

When a reply calls the helper (alone, or mixed with real calls: the helper is resolved first), the same
request is sent again with the named tools' full schemas added in the client's order, and the model's
next answer is the answer to the client's request. Each lookup is one more attempt on the record; its
cost is added to the request's cost and to `plan.lookup_cost_usd`, which the ledger's trimming saving is
net of (`gateway.proxy.account`). The conversation keeps what it loaded on later turns
(`WorkflowRuntime.loaded`), and the loaded names count as calls in the ledger, from which trimming's
counts are rebuilt. After `MAX_LOOKUPS` lookups, or when the model asks for names the gateway cannot
find, the request goes out with every tool the client sent and no helper.

Streams: content deltas pass through as they come; from the first tool-call, finish or usage chunk on,
the rest of the upstream stream is held back until its end, then relayed if it did not call the helper
and dropped if it did (a text preamble the model streamed before calling the helper stays; the next
answer follows it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import orjson

from gateway.proxy.account import Accounts
from gateway.proxy.plan import Plan
from gateway.proxy.protocol import usage_of
from gateway.proxy.trimming import tools_tokens
from gateway.proxy.upstream import Completion, OpenStream, Upstreams
from gateway.store.ledger import Record
from router import LOAD_TOOLS, helper_requests, offer_tools
from router._features import tool_names

MAX_LOOKUPS = 2


class ToolLoader(Upstreams):
    """`Upstreams` for one request whose body carries the helper tool; every other call is delegated."""

    def __init__(self, upstreams: Upstreams, accounts: Accounts, plan: Plan, record: Record):
        # no Upstreams.__init__: this wraps a started instance and owns no session of its own
        self._inner, self._accounts, self._plan, self._record = upstreams, accounts, plan, record

    async def complete(self, model_name: str, body: dict[str, Any]) -> Completion:
        done = await self._inner.complete(model_name, body)
        attempts = done.attempts
        while (asked := _asked(body, done.parsed.get("choices") or ())) is not None:
            usage = usage_of(done.parsed)
            self._charge(done.model.name, body, _first_reply(done.parsed), usage)
            body = self._reoffer(body, asked)
            done = await self._inner.complete(model_name, body)
            attempts += done.attempts
        done.attempts = attempts
        return done

    async def open_stream(self, model_name: str, body: dict[str, Any]) -> OpenStream:
        opened = await self._inner.open_stream(model_name, body)
        holder = _Current(opened)
        return OpenStream(opened.model, self._lines(holder, model_name, body), opened.attempts, holder.close)

    async def _lines(self, holder: _Current, model_name: str, body: dict[str, Any]) -> AsyncIterator[bytes]:
        shown = ""
        while True:
            sorter = _Sorter(shown)
            pending = b""
            async for block in holder.opened.lines:
                pending += block
                if b"\n" not in pending:
                    continue
                *complete, pending = pending.split(b"\n")
                out = sorter.take(complete)
                if out:
                    yield out
            out = sorter.take([pending]) if pending.strip() else b""
            if out:
                yield out
            reply = sorter.reply()
            asked = _asked(body, [{"message": reply}])
            if asked is None:
                yield sorter.rest()
                return
            shown += sorter.relayed
            self._charge(holder.opened.model.name, body, reply, sorter.usage)
            body = self._reoffer(body, asked)
            holder.opened = await self._inner.open_stream(model_name, body)
            self._record.attempts += holder.opened.attempts

    def _charge(
        self, model_name: str, body: Mapping[str, Any], reply: Mapping[str, Any], usage: tuple[int, int, int] | None
    ) -> None:
        """The lookup round trip was paid for: its cost counts in the request's cost and against trimming."""
        if usage is None:
            usage = self._accounts.estimate(model_name, body, reply)
        cost = self._accounts.prices.cost(model_name, prompt=usage[0], completion=usage[1], cached=usage[2])
        self._record.cost_usd += cost
        self._plan.lookup_cost_usd += cost
        self._plan.lookups += 1

    def _reoffer(self, body: dict[str, Any], asked: tuple[str, ...]) -> dict[str, Any]:
        """The request again with the asked-for schemas added (every tool after the last lookup allowed)."""
        plan = self._plan
        client_tools = plan.client_body.get("tools") or []
        offered = set(tool_names(client_tools))
        sent = set(tool_names(body.get("tools"))) - {LOAD_TOOLS}
        wanted = [n for n in asked if n in offered and n not in sent]
        if wanted and plan.lookups < MAX_LOOKUPS:
            tools = offer_tools(client_tools, sent | set(wanted))
        else:  # names it cannot find, or lookups used up: every tool the client sent, and no helper
            tools = list(client_tools)  # (only the names it asked for count as loaded)
        plan.removed_tokens -= tools_tokens(tools, plan.count_model) - tools_tokens(body.get("tools"), plan.count_model)
        self._remember(wanted)
        # the plan's body too: a cascade checks the answer against its tools, an escalation re-sends it
        plan.body = {**plan.body, "tools": tools}
        return {**body, "tools": tools}

    def _remember(self, names: Iterable[str]) -> None:
        names = [n for n in names if n not in self._plan.loaded]
        self._plan.loaded.extend(names)
        if self._plan.runtime is not None:
            self._plan.runtime.loaded.add(self._record.conversation, names)


def _asked(body: Mapping[str, Any], choices: Iterable[Any]) -> tuple[str, ...] | None:
    """Names the replies asked the helper for, or None when none called it (or it was not offered)."""
    if LOAD_TOOLS not in tool_names(body.get("tools")):
        return None
    asked: list[str] | None = None
    for choice in choices:
        message = choice.get("message") if isinstance(choice, Mapping) else None
        names = helper_requests(message) if isinstance(message, Mapping) else None
        if names is not None:
            asked = (asked or []) + [n for n in names if n not in (asked or [])]
    return None if asked is None else tuple(asked)


def _first_reply(parsed: Mapping[str, Any]) -> Mapping[str, Any]:
    choices = parsed.get("choices") or [{}]
    message = choices[0].get("message") if isinstance(choices[0], Mapping) else None
    return message if isinstance(message, Mapping) else {}


class _Current:
    """The upstream stream being read now, so a client that leaves closes the right one."""

    def __init__(self, opened: OpenStream):
        self.opened = opened

    def close(self) -> None:
        if self.opened.close is not None:
            self.opened.close()


class _Sorter:
    """Passes content deltas on; from the first tool-call, finish or usage chunk on, holds the rest.

    After a lookup, the re-asked model often streams the same preamble again: content repeating the
    text the client already has (`shown`) is held while it matches and dropped once it matched whole.
    Each chunk is parsed once (three parses per chunk cost ~10 µs each on a 20-chunk answer).
    """

    def __init__(self, shown: str = "") -> None:
        self.held: list[bytes] = []
        self.shown, self.echo = shown, ""
        self.maybe: list[bytes] | None = [] if shown else None
        self.relayed = ""  # content passed to the client by this stream
        self.usage: tuple[int, int, int] | None = None
        self.content: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}

    def reply(self) -> dict[str, Any]:
        """Choice 0's reply so far, in the shape `helper_requests` and `Accounts.estimate` read."""
        msg: dict[str, Any] = {"role": "assistant", "content": "".join(self.content)}
        if self.calls:
            msg["tool_calls"] = [{"type": "function", "function": c} for _, c in sorted(self.calls.items())]
        return msg

    def take(self, lines: list[bytes]) -> bytes:
        out = bytearray()
        for raw in lines:
            line = raw.rstrip(b"\r")
            if not line.strip():
                continue
            if not line.startswith(b"data:"):
                (self.held.append(line + b"\n") if self.held else out.extend(line + b"\n"))
                continue
            framed = line + b"\n\n"
            hold, text = self._follow(line[5:].strip())
            if self.maybe is not None and not self.held:
                if text is not None and self.shown.startswith(self.echo + text):
                    self.echo += text
                    self.maybe.append(framed)
                    if self.echo == self.shown:  # the whole preamble again: the client has it already
                        self.maybe = None
                    continue
                out += b"".join(self.maybe)  # it says something else: relay what was held, in order
                self.relayed += self.echo
                self.maybe = None
            if self.held or hold:
                self.held.append(framed)
            else:
                out += framed
                self.relayed += text or ""
        return bytes(out)

    def _follow(self, data: bytes) -> tuple[bool, str | None]:
        """(hold this chunk and all after it, its text when it carries only content for choice 0)."""
        if data == b"[DONE]":
            return True, None
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False, None
        if not isinstance(chunk, dict) or "error" in chunk:
            return False, None
        usage = usage_of(chunk)
        if usage is not None:
            self.usage = usage
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            return usage is not None, None
        hold, text = False, None
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            found = choice.get("delta")
            delta: dict[str, Any] = found if isinstance(found, dict) else {}
            hold = hold or bool(delta.get("tool_calls")) or bool(choice.get("finish_reason"))
            if choice.get("index", 0) != 0:
                continue
            if isinstance(delta.get("content"), str):
                self.content.append(delta["content"])
                text = delta["content"] if set(delta) <= {"role", "content", "refusal"} else None
            elif set(delta) <= {"role", "refusal"}:
                text = ""
            for tc in delta.get("tool_calls") or ():
                if isinstance(tc, dict):
                    slot = self.calls.setdefault(int(tc.get("index", 0)), {"name": "", "arguments": ""})
                    fn = tc.get("function") or {}
                    slot["name"] += str(fn.get("name") or "")
                    slot["arguments"] += str(fn.get("arguments") or "")
        return hold, None if hold or len(choices) != 1 or usage is not None else text

    def rest(self) -> bytes:
        """What is still held at the end of the stream, in order."""
        maybe = b"".join(self.maybe or ())
        return maybe + b"".join(self.held)
