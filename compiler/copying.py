"""Copied tool arguments: a value the frontier always copies from the conversation is decoded as a copy.

Some tool-call arguments are never made up in a workflow's traffic: an order number, an email, an
address is copied from what the user said or what a tool returned. A small model picks the right value
(its first token) but garbles a long random one when it copies it token by token: induction on a
repeated digit jumps to the wrong place (``A86673`` written as ``A86737``). Pointer-style copying mends
that at decoding time, as copy mechanisms do in task-oriented dialogue models: while the model writes the
value of such an argument, the tokens it may choose are those that continue a span of the conversation
(one starting at a word boundary), or close the value where such a span ends at one; among them the
model's own scores pick. The value is then always one the conversation holds, and which one is still the
model's decision (a corrected order number, the email rather than the name).

Which arguments: learnt from the training conversations (:func:`find_copied`): a (tool, argument) whose
string values were found verbatim in the messages before the call in at least ``min_share`` of at least
``min_calls`` calls. They are written with the trained model (``copying.json``) and read by every decoder of
it (the eval gate, the replay gate, the simulator, the built-in server), so the gate measures what serves::

    copied = find_copied(train_rows)   # {"lookup_order": {"order_id": {"from": ["user"], "shapes": ["A9"], ...}}}
    write_copied(model_dir, copied)
    rule = CopyRule(tokenizer, read_copied(model_dir))
    allowed = rule.allowed(rule.sources(messages, tools), generated_text)   # token ids, or None: unconstrained
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from .toolcalls import CALL_CLOSE, CALL_OPEN, call_arguments

FILE = "copying.json"
Copied = dict[str, dict[str, dict[str, Any]]]  # tool -> argument -> {"from": roles, "shapes": [...], "max_chars"}
REPLY = ("", "content")  # where a Copied holds the rule for values quoted in replies (a text turn's "argument")
_NAME_RE = re.compile(r'"name"\s*:\s*"((?:[^"\\]|\\.)*)"')
_OPEN_NAME_RE = re.compile(r'^\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)$')
_ARGS_RE = re.compile(r'"arguments"\s*:\s*\{')
_AFTER_VALUE = re.compile(r"\s*($|[,}])")
_NEXT_KEY = re.compile(r'\s*,\s*"([^"]*)(")?')
_AFTER_KEY = re.compile(r"\s*($|:\s*($|\"))")


def _escaped(text: str) -> str:
    """``text`` as it stands inside a JSON string (how a tool call writes a value)."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _texts(message: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(source, text) for the words a message carries: its content under its role (``system`` for a
    developer message), and the string values of its tool calls' arguments as ``call``."""
    role = str(message.get("role") or "")
    role = "system" if role == "developer" else role
    content = message.get("content")
    if isinstance(content, str):
        yield role, content
    elif isinstance(content, list):
        yield role, "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    for _name, args in call_arguments(message):
        if isinstance(args, str):  # not JSON: its text
            yield "call", args
        elif isinstance(args, Mapping):
            yield from (("call", v) for v in args.values() if isinstance(v, str))


def _at_word(text: str, value: str) -> bool:
    """``value`` occurs in ``text`` starting and ending at word boundaries."""
    start = 0
    while (i := text.find(value, start)) >= 0:
        end = i + len(value)
        if (i == 0 or not text[i - 1].isalnum()) and (end == len(text) or not text[end].isalnum()):
            return True
        start = i + 1
    return False


def _calls(message: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """A message's tool calls whose arguments are a JSON object, as (name, arguments)."""
    for name, args in call_arguments(message):
        if isinstance(args, Mapping) and isinstance(name, str):
            yield name, args


def shape(value: str) -> str:
    """A value's shape: runs of capitals, lower-case letters and digits as ``A``, ``a``, ``9``, the rest
    kept (``cy15@example.com`` -> ``a9@a.a``, ``A40490`` -> ``A9``, ``12 High Street`` -> ``9 Aa Aa``)."""
    out: list[str] = []
    for ch in value:
        c = "9" if ch.isdigit() else "A" if ch.isupper() else "a" if ch.isalpha() else ch
        if not (out and out[-1] == c and c in "A9a"):
            out.append(c)
    return "".join(out)


def _words(text: str) -> Iterator[str]:
    """The words of a reply that carry a digit (an order number, a date's day, a house number), without the
    punctuation around them: the values a reply may quote."""
    for word in text.split():
        core = _core(word)
        if any(ch.isdigit() for ch in core):
            yield core


def _lead(word: str) -> int:
    """Where ``word``'s first letter or digit is (its length when it has none)."""
    i = 0
    while i < len(word) and not word[i].isalnum():
        i += 1
    return i


def _core(word: str) -> str:
    """``word`` without the punctuation before and after it (``(A86673).`` -> ``A86673``)."""
    i, j = _lead(word), len(word)
    while j > i and not word[j - 1].isalnum():
        j -= 1
    return word[i:j]


def find_copied(rows: Iterable[Mapping[str, Any]], min_share: float = 0.99, min_calls: int = 5,
                max_shapes: int = 16) -> Copied:
    """The arguments whose string values the conversations copy, each with where and what it copies:

    - ``from``: the sources it copies from (a role's messages, or ``call`` for earlier calls' arguments):
      where its values first appear, most often first, until they hold ``min_share`` of its values (the
      user's words for an order number, a tool's result for a reference). A value is then never taken from
      the date in a system line, nor from a reply that misquoted it;
    - ``shapes``: the shapes (:func:`shape`) its values took, when they are at most ``max_shapes`` (an
      email is copied as an email, not as the word before it); None when values have no common shape;
    - ``max_chars``: the longest value seen;
    - ``within``: how far back its values are found: in the latest ``within`` messages of those sources (1:
      the reason a return is for is in the user's last message, never in the one that asked for a return).

    Replies count as the ``content`` argument of a tool named ``""`` (:data:`REPLY`): their words with a
    digit, when the replies quote them from the conversation as often (``Your order A86673 is with DHL``).
    """
    seen: Counter[tuple[str, str]] = Counter()
    found: dict[tuple[str, str], list[tuple[frozenset[str], str, str]]] = {}  # (sources holding it, first, value)
    back: dict[tuple[str, str], list[dict[str, int]]] = {}  # per hit: source -> messages of it back to the latest holding
    for row in rows:
        before: list[tuple[str, str]] = []
        counts: Counter[str] = Counter()  # messages of each source so far
        latest: list[tuple[str, str, int]] = []  # (source, text, its message's number among the source's)
        for m in row.get("messages") or []:
            if m.get("role") == "assistant":
                values = [((name, key), v) for name, args in _calls(m) for key, v in args.items()]
                if isinstance(m.get("content"), str) and not m.get("tool_calls"):
                    values += [(REPLY, w) for w in _words(m["content"])]
                for at, value in values:
                    if isinstance(value, str) and value.strip():
                        seen[at] += 1
                        holding = [r for r, t in before if _at_word(t, value)]
                        if holding:
                            found.setdefault(at, []).append((frozenset(holding), holding[0], value))
                            ago: dict[str, int] = {}
                            for r, t, k in latest:
                                if _at_word(t, value):
                                    ago[r] = min(ago.get(r, 1 << 30), counts[r] - k)
                            back.setdefault(at, []).append(ago)
            texts = list(_texts(m))
            for r in {r for r, _t in texts}:
                counts[r] += 1
            before.extend(texts)
            latest.extend((r, t, counts[r] - 1) for r, t in texts)
    out: Copied = {}
    for (name, key), n in sorted(seen.items()):
        hits = found.get((name, key), [])
        if n < min_calls or len(hits) < min_share * n:
            continue
        first = Counter(f for _h, f, _v in hits)
        roles: set[str] = set()
        for role, _count in sorted(first.items(), key=lambda rc: (-rc[1], rc[0])):
            if sum(1 for h, _f, _v in hits if h & roles) >= min_share * n:
                break
            roles.add(role)
        shapes = sorted({shape(v) for _h, _f, v in hits})
        within = max((min(a[r] for r in a if r in roles) for a in back[name, key] if roles & set(a)), default=1)
        out.setdefault(name, {})[key] = {"from": sorted(roles), "shapes": shapes if len(shapes) <= max_shapes else None,
                                         "max_chars": max(len(v) for _h, _f, v in hits), "within": within}
    return out


def write_copied(folder: str | Path, copied: Copied) -> None:
    Path(folder, FILE).write_text(json.dumps({"copy_arguments": copied}, indent=2, sort_keys=True))


def read_copied(folder: str | Path) -> Copied:
    """The copied arguments written with a model; none for a model trained before them (or with them off)."""
    path = Path(folder, FILE)
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {str(tool): {str(arg): dict(rule) for arg, rule in args.items()}
            for tool, args in (data.get("copy_arguments") or {}).items()}


def spans(texts: Iterable[str], shapes: Sequence[str] | None, max_chars: int) -> set[str]:
    """The spans of ``texts`` a copied value may be: from a word start to a word end, at most ``max_chars``
    long, of one of ``shapes`` (any shape when None)."""
    allowed = set(shapes) if shapes is not None else None
    out: set[str] = set()
    for text in texts:
        n = len(text)
        starts = [i for i in range(n) if not text[i].isspace() and (i == 0 or not text[i - 1].isalnum())]
        ends = [j for j in range(1, n + 1) if not text[j - 1].isspace() and (j == n or not text[j].isalnum())]
        for i in starts:
            for j in ends:
                if j <= i:
                    continue
                if j - i > max_chars:
                    break
                piece = text[i:j]
                if allowed is None or shape(piece) in allowed:
                    out.add(piece)
    return out


class OpenValue(NamedTuple):
    tool: str
    key: str  # the argument (for a key being written: "")
    prefix: str  # the value (or the key) so far, JSON-escaped
    keys: tuple[str, ...]  # the arguments written before this one
    in_key: bool = False


@dataclass(frozen=True)
class Sources:
    """What a copied value may be taken from: (source, text) of the prompt's messages, and
    each tool's required arguments (its call is not closed before they are written)."""

    texts: tuple[tuple[str, str], ...]
    required: Mapping[str, frozenset[str]]
    params: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # each tool's declared arguments
    ago: tuple[int, ...] = ()  # per text: 1 for its source's latest message, 2 for the one before, ...

    def of(self, rule: Mapping[str, Any]) -> list[str]:
        """The texts a rule copies from: of its sources, within its latest messages of them."""
        within = int(rule.get("within") or 0) or 1 << 30
        ago = self.ago or (1,) * len(self.texts)
        return [t for (r, t), k in zip(self.texts, ago, strict=True) if r in rule["from"] and k <= within]


def open_name(text: str) -> str | None:
    """The tool's name so far where ``text`` (a model's output so far) ends inside a call's name; else None."""
    start = text.rfind(CALL_OPEN)
    if start < 0:
        return None
    found = _OPEN_NAME_RE.match(text[start + len(CALL_OPEN):])
    return found.group(1) if found else None


def open_value(text: str) -> OpenValue | None:
    """Where ``text`` (a model's output so far) ends inside a string value of a tool call's top-level
    argument: the tool, the argument, the value so far and the arguments before it; inside a top-level
    argument's name: ``in_key`` and the name so far; else None."""
    start = text.rfind(CALL_OPEN)
    if start < 0 or CALL_CLOSE in text[start:]:
        return None
    body = text[start + len(CALL_OPEN):]
    name = _NAME_RE.search(body)
    args = _ARGS_RE.search(body)
    if not name or not args:
        return None
    depth, in_str, esc, is_key = 0, False, False, True
    key, cur, keys = "", list[str](), list[str]()
    for ch in body[args.end():]:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
                if depth == 0 and is_key:
                    key = "".join(cur)
                    keys.append(key)
                continue
            cur.append(ch)
        elif ch == '"':
            in_str, cur = True, []
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth < 0:
                return None
        elif depth == 0 and ch == ":":
            is_key = False
        elif depth == 0 and ch == ",":
            is_key = True
    if in_str and depth == 0:
        if is_key:
            return OpenValue(name.group(1), "", "".join(cur), tuple(keys), in_key=True)
        return OpenValue(name.group(1), key, "".join(cur), tuple(keys[:-1]))
    return None


class CopyRule:
    """The decoding constraint for one model: which arguments copy, and its vocabulary as text."""

    def __init__(self, tokenizer: Any, copied: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> None:
        self.copied: dict[str, dict[str, dict[str, Any]]] = {
            name: {a: dict(rule) | {"from": frozenset(rule.get("from") or ())} for a, rule in args.items()}
            for name, args in copied.items() if args}
        self._spans: tuple[Any, tuple[str, str], set[str]] = (None, ("", ""), set())
        self._quotable: tuple[Any, set[str], set[str]] = (None, set(), set())  # sources, reply values, their prefixes
        self.tokenizer = tokenizer
        self._plain: dict[str, list[int]] | None = None  # token text -> ids (texts without a quote)
        self._closing: dict[str, list[int]] = {}  # text before a token's first quote -> ids
        self._ends_call: set[int] = set()  # closing tokens that also close the arguments (`"}`)
        self._key_closing: dict[str, list[int]] = {}  # as _closing, for tokens ending an argument's name (`": "`)
        self._next_key: dict[int, tuple[str, bool]] = {}  # closing token -> the next argument's name it starts
        self._longest = 1

    def __bool__(self) -> bool:
        return bool(self.copied)

    def _vocab(self) -> dict[str, list[int]]:
        if self._plain is None:
            special = set(getattr(self.tokenizer, "all_special_ids", []) or [])
            plain: dict[str, list[int]] = {}
            for i in range(len(self.tokenizer)):
                if i in special:
                    continue
                text = self.tokenizer.decode([i], skip_special_tokens=False)
                if not text or "\ufffd" in text or CALL_OPEN in text or CALL_CLOSE in text:
                    continue
                if '"' in text:
                    before, after = text.split('"', 1)
                    if _AFTER_KEY.match(after):
                        self._key_closing.setdefault(before, []).append(i)
                    if _AFTER_VALUE.match(after):  # `"`, `",`, `"}`: never `": "`, which would make the value a key
                        self._closing.setdefault(before, []).append(i)
                        if (nxt := _NEXT_KEY.match(after)) is not None:  # `", "reason": "` names the next argument
                            self._next_key[i] = (nxt.group(1), bool(nxt.group(2)))
                        if "}" in after:
                            self._ends_call.add(i)
                else:
                    plain.setdefault(text, []).append(i)
                self._longest = max(self._longest, len(text))
            self._plain = plain
        return self._plain

    @staticmethod
    def sources(messages: Iterable[Mapping[str, Any]], tools: Iterable[Mapping[str, Any]] = ()) -> Sources:
        """What the values of a call answering ``messages`` may be copied from (every message), and the
        required arguments of ``tools``."""
        required, params = {}, {}
        for t in tools:
            fn = t.get("function", t)
            schema = fn.get("parameters") or {}
            required[str(fn.get("name"))] = frozenset(str(k) for k in schema.get("required") or [])
            if schema.get("additionalProperties") is not True:
                params[str(fn.get("name"))] = tuple(str(k) for k in schema.get("properties") or {})
        per = [[(r, t) for r, t in _texts(m) if t] for m in messages]
        later: Counter[str] = Counter()
        ago: list[list[int]] = []
        for texts in reversed(per):  # from the latest message back
            roles = {r for r, _t in texts}
            later.update(roles)
            ago.append([later[r] for r, _t in texts])
        return Sources(tuple(x for texts in per for x in texts), required, params,
                       tuple(k for ks in reversed(ago) for k in ks))

    def allowed(self, sources: Sources, generated: str) -> list[int] | None:
        """Token ids that keep a copied argument's value one of the conversation's spans of its shape (or
        close it where it is one); None where no constraint applies (not inside such a value, or no span
        starts with what is written)."""
        if not self.copied or CALL_OPEN not in generated:
            return None
        if (called := open_name(generated)) is not None:
            return self._name_tokens(sources, called)
        at = open_value(generated)
        if at is not None and at.in_key:
            return self._key_tokens(sources, at)
        rule = self.copied.get(at[0], {}).get(at[1]) if at and at.tool != REPLY[0] else None
        if at is None or rule is None:
            return None
        prefix = at[2]
        cached, key, candidates = self._spans
        if cached is not sources or key != at[:2]:  # the candidates of one value, computed at its first token
            texts = [_escaped(t) for t in sources.of(rule)]  # as a call's JSON writes them
            budget = 2 * int(rule.get("max_chars") or 64) + 8  # escaped text runs longer than the value
            candidates = spans(texts, rule.get("shapes"), budget)
            self._spans = (sources, at[:2], candidates)
        self._vocab()  # fills the closing tokens too
        ids: set[int] = set()
        for value in candidates:
            if not value.startswith(prefix):
                continue
            rest = value[len(prefix):]
            ids |= self._beginning(rest)
            ids.update(self._closing.get(rest, ()))  # the value ends here: a token closing the string
        if sources.required.get(at.tool, frozenset()) - {*at.keys, at.key}:
            ids -= self._ends_call  # a required argument is still to come
        names = sources.params.get(at.tool)
        if names:  # a closing token that starts the next argument's name starts a declared one not yet written
            left = [n for n in names if n not in at.keys and n != at.key]
            ids = {i for i in ids if i not in self._next_key or any(
                n == self._next_key[i][0] or (not self._next_key[i][1] and n.startswith(self._next_key[i][0]))
                for n in left)}
        return sorted(ids) or None

    def _beginning(self, rest: str) -> set[int]:
        """The tokens (without a quote) whose text is a beginning of ``rest``."""
        plain = self._vocab()
        return {i for j in range(1, min(len(rest), self._longest) + 1) for i in plain.get(rest[:j], ())}

    @property
    def quotes(self) -> bool:
        """Whether replies' values are copies too (:meth:`reply_ok`)."""
        return REPLY[1] in self.copied.get(REPLY[0], {})

    def reply_ok(self, sources: Sources, before: str, after: str) -> bool:
        """Whether ``after`` (a reply so far, ``before`` and one more token) keeps every word with a digit
        that the token wrote a value the conversation holds: a span of the rule's sources of its shapes,
        whole once the word ends, a beginning of one while it is open. Outside replies (in a tool call),
        and for a model whose replies quote nothing, always.

        A small model writes ``I could not find order 2682 is with DHL`` where its training reply says
        ``order A26820. Could you``: a garbled value derails the words after it. The decoder tries its
        best-scored tokens in turn and keeps the first this allows.
        """
        rule = self.copied.get(REPLY[0], {}).get(REPLY[1])
        if rule is None or CALL_OPEN in after:
            return True
        if self._quotable[0] is not sources:
            values = spans(sources.of(rule), rule.get("shapes"),
                           int(rule.get("max_chars") or 64))
            values = {v for v in values if any(ch.isdigit() for ch in v)}
            self._quotable = (sources, values, {v[:i] for v in values for i in range(1, len(v) + 1)})
        _src, values, prefixes = self._quotable
        start = max(before.rfind(c) for c in " \n\t") + 1  # the word the token writes into
        segment = after[start:]
        words = segment.split()
        for k, word in enumerate(words):
            core = _core(word)
            if not any(ch.isdigit() for ch in core):
                continue
            if k == len(words) - 1 and not segment[-1:].isspace():  # still open: a beginning of a value
                if word[_lead(word):] in prefixes or core in values:
                    continue
                return False
            if core not in values:
                return False
        return True

    def reply_tokens(self, sources: Sources, before: str) -> list[int]:
        """The tokens that write a quoted value from here (begin one, or go on with the one open), for when
        the model's best token writes a value the conversation does not hold: it meant a value here."""
        self.reply_ok(sources, before, before)  # the values of these sources
        _src, values, _prefixes = self._quotable
        head = before[max(before.rfind(c) for c in " \n\t") + 1:]
        i = _lead(head)
        if any(ch.isdigit() for ch in head) and _core(head) in values:
            return []  # a value is whole: what follows is the model's
        ids: set[int] = set()
        for value in values:
            targets = [value[len(head) - i:]] if value.startswith(head[i:]) else []  # the word open: go on with it
            if not any(ch.isdigit() for ch in head):
                targets.append(" " + value if head else value)  # a new word
            for target in targets:
                ids |= self._beginning(target)
        text = self.tokenizer.decode
        return sorted(k for k in ids if self.reply_ok(sources, before, before + text([k], skip_special_tokens=False)))

    def _name_tokens(self, sources: Sources, prefix: str) -> list[int] | None:
        """A call's tool is one of the request's tools: its name goes on with one, or closes where one ends
        (and the arguments come next)."""
        self._vocab()  # fills the closing tokens too
        ids: set[int] = set()
        for name in sources.required:
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix):]
            ids |= self._beginning(rest)
            ids.update(i for i in self._closing.get(rest, ()) if i not in self._ends_call and (
                i not in self._next_key or "arguments".startswith(self._next_key[i][0])))
        return sorted(ids) or None

    def _key_tokens(self, sources: Sources, at: OpenValue) -> list[int] | None:
        """In a copying tool's call, an argument's name is one of its declared arguments not yet written."""
        names = sources.params.get(at.tool)
        if at.tool not in self.copied or not names:
            return None
        self._vocab()  # fills the closing tokens too
        ids: set[int] = set()
        for name in names:
            if name in at.keys or not name.startswith(at.prefix):
                continue
            rest = name[len(at.prefix):]
            ids |= self._beginning(rest)
            ids.update(self._key_closing.get(rest, ()))
        return sorted(ids) or None
