"""Which workflow and which conversation a request belongs to, computed from the request alone.

    fingerprint_workflow(messages, tools)   # -> ("you-are-travel-booking-3f2a9c1d", "3f2a9c1d...")
    prefix_keys(messages)                    # stitching keys, one per assistant-ending prefix

A conversation belongs to one workflow, decided at its first request: a key bound to a workflow, else
`X-Tiergate-Workflow`, else `metadata.workflow`, else a fingerprint; every stitched turn inherits it
(docs/identity.md). The fingerprint is taken from what stays the same across a workflow: the main
system message (the longest of the leading ones, so a second system message naming the current step
never counts), without its step, date, name and `label: value` lines, with dates, ids and numbers
normalised away, plus the sorted tool names. A conversation with no explicit id is stitched: request
k+1 re-sends request k's messages plus k's reply, so the hash of (messages + reply) after request k
equals the hash of a prefix of request k+1's messages.

The stitching index (continuation key -> conversation id, turn) is kept in Redis when configured, so
a follow-up that lands on another gateway process still joins its conversation; always mirrored in a
bounded in-process LRU, which serves alone while Redis is away.

    ident = await identify(index, body, headers, key)   # Identity: workflow, conversation, turn
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import unicodedata
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

import orjson

from gateway.errors import InvalidRequest, PermissionDenied
from gateway.proxy.keys import KeyInfo
from gateway.store.redis_link import RedisLink

_VOLATILE = [
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<uuid>"),
    (
        re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b"),
        "<date>",
    ),
    (re.compile(r"\b\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b"), "<date>"),
    (re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?\s*(?:[ap]\.?m\.?)?\b", re.I), "<time>"),
    (
        re.compile(
            r"\b(?:mon|tues?|wed(?:nes)?|thu(?:rs)?|fri|sat(?:ur)?|sun)(?:day)?\b|"
            r"\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?\s+\d{1,2}(?:st|nd|rd|th)?(?:,?\s*\d{4})?",
            re.I,
        ),
        "<date>",
    ),
    (re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.]+\b"), "<email>"),
    # any word with a digit in it is an id, a code or a count: "A1", "B777", "TP1234", "v2"
    (re.compile(r"\b(?=[0-9a-z_]*[a-z_])(?=[0-9a-z_]*\d)[0-9a-z_]+\b", re.I), "<id>"),
    (re.compile(r"\d+(?:[.,]\d+)*"), "<n>"),
]
_WORD = re.compile(r"[a-z]+")
_STOP = frozenset(
    "a an the you are your is be to of and or for in on at with as by it this that we our i me my "
    "will can should must always never please help helpful assistant agent ai bot".split()
)


def content_text(content: Any) -> str:
    """The text of a message's `content`, whether a string or a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text"
        )
    return str(content)


def normalise_static(text: str) -> str:
    for pattern, repl in _VOLATILE:
        text = pattern.sub(repl, text)
    return " ".join(text.split()).lower()


def system_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """Every system and developer message's text, joined (what compile strips)."""
    return "\n".join(
        content_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer")
    )


def main_system_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The longest system message before the first other message: the procedure, not the step.

    Orchestrators send the procedure plus a second system message naming the current step (before the
    history or after it); the longest leading one is the procedure whichever comes first, and a step
    message later in the history never counts.
    """
    best = ""
    for m in messages:
        if m.get("role") not in ("system", "developer"):
            break
        text = content_text(m.get("content"))
        if len(text) > len(best):
            best = text
    return best


# Lines that change per step, per conversation or per user inside one system message.
_STEP_LINE = re.compile(
    r"^\W*(?:(?:current|next|active|this|now)\W+)?(?:step|stage|state|node|phase)\b", re.I
)
# `Customer name: Ada Byron.`, `Today's date: ...`, `Account: 0042`: a short label and a short value.
_LABEL_LINE = re.compile(r"^[^:\n]{1,40}:\s*\S.{0,60}$")
_NAME_CUE = re.compile(
    r"\b((?i:name is|named|called|speaking (?:with|to)|talking (?:with|to)|user is|customer is|dear|"
    r"hello|hi))(\W+)[A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)*"
)


def static_lines(system: str) -> str:
    """The system text without the lines that change within a workflow (step, date, user name)."""
    kept = []
    for line in system.splitlines():
        stripped = line.strip()
        if not stripped or _STEP_LINE.match(stripped):
            continue
        if _LABEL_LINE.match(stripped) and len(stripped.split(":", 1)[0].split()) <= 4:
            continue
        kept.append(_NAME_CUE.sub(lambda m: m.group(1) + m.group(2) + "<name>", stripped))
    return "\n".join(kept) if kept else system


def tool_names(tools: Sequence[Mapping[str, Any]] | None) -> list[str]:
    names = []
    for t in tools or ():
        fn = t.get("function") if isinstance(t, Mapping) else None
        if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
            names.append(fn["name"])
    return sorted(names)


def fingerprint_workflow(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None
) -> tuple[str, str]:
    """(readable auto-name, fingerprint). Same static prompt + tool set -> same workflow.

    Both come from the text alone, never from arrival order, so every process and every restart
    gives a workflow the same name.
    """
    return _fingerprint(main_system_text(messages), tuple(tool_names(tools)))


# Agents re-send the same system prompt every turn: normalising it once per distinct text saves ~0.4 ms
# of regex work per request on a 2 KB prompt (py-spy on bench/overhead: 27% of the gateway's CPU).
@functools.lru_cache(maxsize=4096)
def _fingerprint(system: str, names: tuple[str, ...]) -> tuple[str, str]:
    static = normalise_static(static_lines(system))
    digest = hashlib.sha256((static + "\x00" + ",".join(names)).encode()).hexdigest()[:16]
    words = [
        w for w in _WORD.findall(static.replace("<", " ").replace(">", " ")) if w not in _STOP and len(w) > 2
    ]
    words = [w for w in words if w not in {"uuid", "date", "time", "email", "hex"}]
    if words:
        stem = "-".join(words[:3])
    elif names:
        stem = "tools-" + "-".join(n.replace("_", "-") for n in names[:2])
    else:
        stem = "chat"
    return f"{stem[:40]}-{digest[:6]}", digest


def _canon(msg: Mapping[str, Any]) -> bytes:
    """The parts of a message that a client echoes back faithfully; ids and nulls vary by SDK."""
    calls = msg.get("tool_calls") or ()
    call_parts = [
        ((c.get("function") or {}).get("name"), (c.get("function") or {}).get("arguments")) for c in calls
    ]
    return orjson.dumps(
        [msg.get("role"), content_text(msg.get("content")), call_parts, msg.get("tool_call_id")]
    )


def chained_key(prev: str, msg: Mapping[str, Any]) -> str:
    """Hash chain over messages: key_i = H(key_{i-1} || canon(m_i)), so a prefix's key never changes."""
    h = hashlib.blake2b(prev.encode(), digest_size=16)
    h.update(_canon(msg))
    return h.hexdigest()


def prefix_hashes(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    """hashes[i] covers messages[: i + 1]."""
    out: list[str] = []
    prev = ""
    for m in messages:
        prev = chained_key(prev, m)
        out.append(prev)
    return out


def stitch_candidates(
    messages: Sequence[Mapping[str, Any]], hashes: Sequence[str]
) -> list[tuple[str, int]]:
    """(key, prefix length) of earlier turns this request may continue: prefixes ending on an assistant
    reply, longest first."""
    return [
        (hashes[i], i + 1) for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "assistant"
    ]


def continuation_key(hashes: Sequence[str], reply: Mapping[str, Any]) -> str:
    """The key a follow-up request will present for this request's messages plus its reply."""
    return chained_key(hashes[-1] if hashes else "", reply)


@dataclass
class Identity:
    workflow: str
    workflow_source: str
    fingerprint: str
    conversation: str
    turn: int
    hashes: list[str] = field(default_factory=list)
    continued: int = 0  # how many leading messages an earlier turn of this conversation already sent


_CONTROL = frozenset({"Cc", "Zl", "Zp"})


def workflow_name(value: str, param: str, *, from_header: bool = False, kind: str = "workflow name") -> str:
    """A client-given workflow name, checked: any Unicode, no control characters, at most 200 chars.

    A header value arrives as Latin-1 text; it may carry the name percent-encoded as UTF-8
    (`caf%C3%A9`, RFC 3986, or RFC 8187's `UTF-8''caf%C3%A9`) or as raw UTF-8 bytes; both decode.
    """
    name = value
    if from_header:
        if name[:7].lower() == "utf-8''":
            name = name[7:]
        try:
            name = name.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
        if "%" in name:
            try:
                name = unquote(name, errors="strict")
            except UnicodeDecodeError:
                raise InvalidRequest(
                    f"The header `X-Tiergate-Workflow` is not percent-encoded UTF-8: `{value[:80]}`; "
                    "encode the name as UTF-8 and percent-encode it (e.g. `caf%C3%A9`).",
                    param=param,
                ) from None
    name = name.strip()
    bad = next((ch for ch in name if unicodedata.category(ch) in _CONTROL), None)
    if bad is not None:
        raise InvalidRequest(
            f"The {kind} in `{param}` contains the control character U+{ord(bad):04X}; "
            "use printable characters only (any language is fine).",
            param=param,
        )
    return name[:200]


def header_value(name: str) -> str:
    """A workflow name as a response header: percent-encoded UTF-8 where it is not plain ASCII.

    Printable ASCII other than `%` stays as is, so `support` reads `support` and `café` reads
    `caf%C3%A9`; `urllib.parse.unquote` gives the name back in every case.
    """
    return quote(name, safe=_HEADER_SAFE)


_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def named_workflow(
    body: Mapping[str, Any], headers: Mapping[str, str], key: KeyInfo | None
) -> tuple[str, str] | None:
    """The workflow a request names (key binding, header, metadata), or None when it names none.

    A key bound to a workflow decides: a header or `metadata.workflow` naming another is refused with
    403, so a key bound to `support` can never write `billing`'s ledger or get `billing`'s routing.
    """
    claimed: tuple[str, str] | None = None
    raw_header = headers.get("x-tiergate-workflow")
    metadata = body.get("metadata")
    meta_name = metadata.get("workflow") if isinstance(metadata, dict) else None
    if raw_header:
        name = workflow_name(raw_header, "X-Tiergate-Workflow", from_header=True)
        claimed = (name, "header") if name else None
    if claimed is None and isinstance(meta_name, str) and meta_name:
        name = workflow_name(meta_name, "metadata.workflow")
        claimed = (name, "metadata") if name else None
    if key is not None and key.workflow:
        if claimed is not None and claimed[0] != key.workflow:
            raise PermissionDenied(
                f"This API key is bound to the workflow `{key.workflow}`; it cannot send requests as "
                f"`{claimed[0]}`. Drop the {claimed[1]} or use a key bound to `{claimed[0]}`.",
                param="X-Tiergate-Workflow" if claimed[1] == "header" else "metadata.workflow",
            )
        return key.workflow, "key"
    return claimed


async def identify(
    conversations: ConversationIndex, body: dict[str, Any], headers: Mapping[str, str], key: KeyInfo | None
) -> Identity:
    """Name the workflow and find or start the conversation; a stitched turn inherits the workflow."""
    messages = body["messages"]
    auto_name, fingerprint = fingerprint_workflow(messages, body.get("tools"))
    metadata: dict[str, Any] = body["metadata"] if isinstance(body.get("metadata"), dict) else {}
    named = named_workflow(body, headers, key)
    hashes = prefix_hashes(messages)
    earlier = await conversations.lookup(stitch_candidates(messages, hashes))
    if earlier is not None and named is not None and earlier.workflow not in (None, named[0]):
        earlier = None  # a conversation never spans two workflows: this one starts afresh
    if named is not None:
        workflow, source = named
    elif earlier is not None and earlier.workflow:
        workflow, source = earlier.workflow, "conversation"
    else:
        workflow, source = auto_name, "fingerprint"
    explicit = headers.get("x-tiergate-conversation") or (
        metadata.get("conversation") if isinstance(metadata.get("conversation"), str) else None
    )
    if explicit:  # echoed in a response header: the same rules as a workflow name
        where = "X-Tiergate-Conversation" if headers.get("x-tiergate-conversation") else "metadata.conversation"
        explicit = workflow_name(explicit, where, kind="conversation id")
    continued = earlier.length if earlier else 0
    if explicit:
        conversation = explicit[:64]
        turn = earlier.turn + 1 if earlier else 1 + sum(1 for m in messages if m.get("role") == "assistant")
    elif earlier:
        conversation, turn = earlier.conversation, earlier.turn + 1
    else:
        conversation, turn = os.urandom(16).hex(), 1
    return Identity(workflow, source, fingerprint, conversation, turn, hashes, continued)


@dataclass(frozen=True)
class Earlier:
    """The earlier turn a request continues: its conversation, turn, workflow and messages so far."""

    conversation: str
    turn: int
    workflow: str | None
    length: int


_PREFIX = "tg:conv:"


def _parse(value: str | bytes, length: int) -> Earlier:
    text = value.decode() if isinstance(value, bytes) else value
    parts = text.split("|", 2)  # conversation|turn|workflow (older entries: conversation|turn)
    return Earlier(parts[0], int(parts[1]), parts[2] if len(parts) > 2 else None, length)


class ConversationIndex:
    def __init__(self, link: RedisLink, *, capacity: int = 200_000, ttl_seconds: int = 86_400):
        self._link = link
        self._lru: OrderedDict[str, str] = OrderedDict()
        self._capacity = capacity
        self._ttl = ttl_seconds

    async def lookup(self, candidates: Sequence[tuple[str, int]]) -> Earlier | None:
        """The longest earlier exchange this request continues; candidates are (key, prefix length)."""
        if not candidates:
            return None
        if self._link.available:
            values = await self._link.call(lambda r: r.mget([_PREFIX + c for c, _ in candidates]))
            if values is not None:
                for v, (_, length) in zip(values, candidates, strict=True):
                    if v:
                        return _parse(v, length)
                return None
        for c, length in candidates:
            hit = self._lru.get(c)
            if hit is not None:
                self._lru.move_to_end(c)
                return _parse(hit, length)
        return None

    async def remember(self, key: str, conversation: str, turn: int, workflow: str) -> None:
        value = f"{conversation}|{turn}|{workflow}"
        self._lru[key] = value
        self._lru.move_to_end(key)
        while len(self._lru) > self._capacity:
            self._lru.popitem(last=False)
        if self._link.available:
            await self._link.call(lambda r: r.set(_PREFIX + key, value, ex=self._ttl))
