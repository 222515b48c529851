"""Copied tool arguments (compiler/copying.py): which arguments copy, and decoding that keeps them copies.

The rule is learnt from known conversations (exact roles, shapes, lengths), applied to a tokenizer trained
here (the scratch one and a Qwen-like one), and then to a really trained micro model: a model that learnt
to write one memorised order number writes the number the user gave once its decoder copies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from compiler.copying import (
    REPLY,
    CopyRule,
    find_copied,
    open_name,
    open_value,
    read_copied,
    shape,
    spans,
    write_copied,
)
from compiler.scratch import train_tokenizer

TOOLS = [{"type": "function", "function": {"name": "lookup_order", "parameters": {
    "type": "object", "properties": {"order_id": {"type": "string"}, "channel": {"type": "string"}}}}}]


def call(name: str, **args: str) -> dict[str, Any]:
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]}


def conversation(order: str, email: str, said: str = "My order is {order}.") -> dict[str, Any]:
    return {"tools": TOOLS, "messages": [
        {"role": "system", "content": "Today's date: 2026-12-04."},
        {"role": "user", "content": said.format(order=order)},
        call("lookup_order", order_id=order, channel="web"),
        {"role": "tool", "tool_call_id": "c1", "content": json.dumps({"order_id": order, "ref": "R7731"})},
        {"role": "user", "content": f"It's {email}."},
        call("verify", order_id=order, email=email, ref="R7731", note="checked"),
        {"role": "assistant", "content": "Thanks, you are verified."},
    ]}


ROWS = [conversation(f"A{10000 + 7919 * i % 90000}", f"user{i}@example.com") for i in range(8)]


def test_shapes_name_runs_of_letters_and_digits() -> None:
    assert shape("A86673") == "A9"
    assert shape("cy15@example.com") == "a9@a.a"
    assert shape("12 High Street, Leeds") == "9 Aa Aa, Aa"
    assert shape("too small") == "a a"


def test_found_arguments_roles_shapes_and_lengths() -> None:
    copied = find_copied(ROWS)
    assert copied == {
        "lookup_order": {"order_id": {"from": ["user"], "shapes": ["A9"], "max_chars": 6, "within": 1}},
        # the order number is in the user's words, the tool's result and the earlier call: it came from the user,
        # two of the user's messages back (the latest gave the email)
        "verify": {"email": {"from": ["user"], "shapes": ["a9@a.a"], "max_chars": 17, "within": 1},
                   "order_id": {"from": ["user"], "shapes": ["A9"], "max_chars": 6, "within": 2},
                   "ref": {"from": ["tool"], "shapes": ["A9"], "max_chars": 5, "within": 1}},
    }
    # a constant the conversation never says (channel, note) is not a copy; nor is anything below min_calls
    assert find_copied(ROWS, min_calls=9) == {}


def test_an_argument_made_up_once_in_a_hundred_is_not_a_copy() -> None:
    rows = [conversation(f"A{10000 + i}", f"u{i}@example.com") for i in range(99)]
    rows.append(conversation("A55555", "u@example.com", said="My order is the one from Tuesday."))
    assert "lookup_order" in find_copied(rows)  # 99 of 100 is the default's 0.99
    assert "lookup_order" not in find_copied(rows, min_share=0.995)


def test_values_quoted_in_replies_are_found_with_their_sources() -> None:
    """A reply's words with a digit count as its ``content`` argument: copied when the conversation held them."""
    rows = [dict(r, messages=[*r["messages"], {"role": "assistant", "content": f"Sent to user{i}@example.com (R7731)."}])
            for i, r in enumerate(ROWS)]
    # the email first appears in the user's words, the reference in the tool's result
    assert find_copied(rows)[REPLY[0]] == {REPLY[1]: {"from": ["tool", "user"], "shapes": ["A9", "a9@a.a"],
                                                      "max_chars": 17, "within": 1}}
    assert REPLY[0] not in find_copied(ROWS)  # replies without a digit: nothing to copy
    made_up = [*rows, dict(rows[0], messages=[*rows[0]["messages"], {"role": "assistant", "content": "Call 0800 1234."}])]
    assert REPLY[0] not in find_copied(made_up)  # two numbers of eighteen the conversation never held


def test_reply_words_with_a_digit_stay_values_of_the_conversation() -> None:
    rule = CopyRule(None, {"": {"content": {"from": ["tool", "user"], "shapes": ["9", "A9"], "max_chars": 6}}})
    sources = rule.sources([{"role": "system", "content": "Ticket A55555."},
                            {"role": "user", "content": "It is A26820, the one from 12 High Street."},
                            {"role": "tool", "content": '{"eta": "5 December"}'}])
    said = "I could not find order"
    assert rule.quotes
    assert rule.reply_ok(sources, said, said + " A")  # no digit yet
    assert rule.reply_ok(sources, said + " A", said + " A268")  # a beginning of A26820
    assert not rule.reply_ok(sources, said + " A", said + " A269")
    assert not rule.reply_ok(sources, said, said + " 2682")  # the garble a small model writes
    assert not rule.reply_ok(sources, said, said + " A55555")  # a system line is not a source
    assert rule.reply_ok(sources, said + " A26820", said + " A26820.")  # closes at its end
    assert not rule.reply_ok(sources, said + " A268", said + " A268.")  # not before
    assert not rule.reply_ok(sources, said + " A268", said + " A268 is")
    assert rule.reply_ok(sources, "It arrives on", "It arrives on 5 December, to 12 High")
    assert not rule.reply_ok(sources, "It arrives on", "It arrives on 6 December")
    assert rule.reply_ok(sources, "x", '<tool_call>{"name": "t", "arguments": {"n": "99')  # a call: not a reply
    assert CopyRule(None, {}).reply_ok(sources, said, said + " 2682")  # no rule: anything


def test_values_are_copied_from_the_latest_messages_the_rule_learnt() -> None:
    """``within``: a corrected number is quoted, not the one before it; older messages of other sources count apart."""
    rule = CopyRule(None, {"": {"content": {"from": ["tool", "user"], "shapes": ["A9"], "max_chars": 6, "within": 1}}})
    sources = rule.sources([{"role": "user", "content": "It is A26820."},
                            {"role": "tool", "content": '{"ref": "R1234"}'},
                            {"role": "assistant", "content": "I could not find it."},
                            {"role": "user", "content": "Sorry, A26821."}])
    assert sources.ago == (2, 1, 1, 1)
    assert rule.reply_ok(sources, "Order", "Order A26821") and rule.reply_ok(sources, "Ref", "Ref R1234")
    assert not rule.reply_ok(sources, "Order", "Order A26820")
    assert CopyRule(None, {"": {"content": {"from": ["user"], "shapes": ["A9"], "max_chars": 6, "within": 2}}}).reply_ok(
        sources, "Order", "Order A26820")


def test_open_value_says_which_argument_is_being_written() -> None:
    head = '<tool_call>{"name": "verify", "arguments": {"order_id": "A86673", '
    assert open_value(head + '"email": "cy1') == ("verify", "email", "cy1", ("order_id",), False)
    assert open_value(head + '"email": "') == ("verify", "email", "", ("order_id",), False)
    assert open_value(head + '"email') == ("verify", "", "email", ("order_id",), True)  # a name, not a value
    assert open_value(head + '"email": "a@b.c"}}</tool_call>') is None
    assert open_value('<tool_call>{"name": "v", "arguments": {"q": {"inner": "x') is None  # nested: left alone
    assert open_value('<tool_call>{"name": "v", "arguments": {"q": "say \\"hi') == ("v", "q", 'say \\"hi', (), False)
    assert open_value("Your order A86673 is on its way.") is None
    assert open_name('<tool_call>{"name": "look') == "look" and open_name('<tool_call>{"name": "lookup", "') is None


def test_spans_are_word_aligned_and_of_a_known_shape() -> None:
    texts = ["It's cy15@example.com, not dee4@example.com.", "Order A86673 of 2026-12-04"]
    assert spans(texts, ["a9@a.a"], 40) == {"cy15@example.com", "dee4@example.com"}
    assert spans(texts, ["A9"], 10) == {"A86673"}
    assert "A8667" not in spans(texts, None, 10)  # never a piece of a word


def _allowed_texts(rule: CopyRule, tok: Any, sources: Any, text: str) -> set[str]:
    return {tok.decode([i]) for i in rule.allowed(sources, text) or []}


@pytest.mark.parametrize("kind", ["scratch", "qwen"])
def test_allowed_tokens_continue_a_span_and_close_it_only_at_its_end(kind: str, tmp_path: Path) -> None:
    if kind == "scratch":
        tok = train_tokenizer(ROWS * 4, vocab_size=400)
    else:
        from tiny_qwen import train_qwen_tokenizer

        tok = train_qwen_tokenizer([json.dumps(r) for r in ROWS * 4], vocab_size=600)
    rule = CopyRule(tok, find_copied(ROWS))
    sources = rule.sources([{"role": "user", "content": "It is A86673, or was it A86612?"},
                            {"role": "system", "content": "Ticket A86699."}], TOOLS)
    head = '<tool_call>{"name": "lookup_order", "arguments": {"order_id": "'
    first = _allowed_texts(rule, tok, sources, head)
    assert first and all("A86673".startswith(t) or "A86612".startswith(t) for t in first)
    assert all(not "A86699".startswith(t) or "A86673".startswith(t) for t in first)  # a system line is not a source
    later = _allowed_texts(rule, tok, sources, head + "A866")
    assert later and later <= {"7", "73", "1", "12"}
    done = _allowed_texts(rule, tok, sources, head + "A86673")
    assert done and all(t.startswith('"') for t in done)  # only a closing quote once the value is whole
    assert any("}" in t for t in done)
    # a required argument still to come: the value closes, the call does not
    needs = rule.sources([{"role": "user", "content": "It is A86673."}],
                         [{"type": "function", "function": {"name": "lookup_order", "parameters": {
                             "type": "object", "required": ["order_id", "channel"]}}}])
    early = _allowed_texts(rule, tok, needs, head + "A86673")
    assert early and all(t.startswith('"') and "}" not in t for t in early)
    assert rule.allowed(sources, head.replace("lookup_order", "cancel")) is None  # not a copied tool
    assert rule.allowed(sources, head.replace("order_id", "channel")) is None  # not a copied argument
    assert rule.allowed(sources, head + "Z9") is None  # nothing starts so: unconstrained, not stuck
    # an argument's name is a declared one not yet written; a closing token naming the next one, too
    names = _allowed_texts(rule, tok, sources, head + 'A86673", "')
    assert names and all("channel".startswith(t) or t.startswith('channel"') for t in names), names
    assert not any("order_id".startswith(t) and not "channel".startswith(t) for t in names)
    # the tool is one of the request's tools: its name goes on with one and closes where one ends
    called = _allowed_texts(rule, tok, sources, '<tool_call>{"name": "lookup')
    assert called and all("_order".startswith(t) or t.startswith('"') for t in called), called
    assert not any("}" in t for t in _allowed_texts(rule, tok, sources, '<tool_call>{"name": "lookup_order'))
    assert rule.allowed(sources, '<tool_call>{"name": "') and rule.allowed(sources, '<tool_call>{"name": "x') is None
    write_copied(tmp_path, find_copied(ROWS))
    assert read_copied(tmp_path) == find_copied(ROWS)
    assert read_copied(tmp_path / "missing") == {}


@pytest.mark.timeout(300)
def test_a_trained_model_copies_the_users_number_with_the_rule(tmp_path: Path) -> None:
    """A tiny model trained to call lookup_order with one memorised number writes that number plain, and
    the number the user gave with the copy rule: the rule, not the weights, keeps a value a copy."""
    from compiler.config import TrainConfig
    from compiler.simulate import ModelPolicy
    from compiler.train import train

    memorised = {"tools": TOOLS, "messages": [
        {"role": "user", "content": "Hello, my order please."},
        call("lookup_order", order_id="A11111"),
    ]}
    cfg = TrainConfig(base_model="scratch:tiny", batch_size=4, max_steps=100, eval_steps=1000, vocab_size=300,
                      logging_steps=1000, learning_rate=0.005, copy_arguments=True)
    result = train([memorised] * 16, [memorised], tmp_path / "run", cfg, echo=lambda _s: None)
    # the training rows never copy, so no rule was learnt from them; the test gives the one to apply
    assert read_copied(result.model_dir) == {}
    asked = [{"role": "user", "content": "Hello, my order please. It is A86673."}]
    plain = ModelPolicy.from_folder(result.model_dir)
    text, _, _ = plain.complete_text(asked, TOOLS)
    assert text.startswith('<tool_call>{"name": "lookup_order"') and '"A1' in text and "A86673" not in text, text
    write_copied(result.model_dir, {"lookup_order": {"order_id": {"from": ["user"], "shapes": ["A9"], "max_chars": 6}}})
    copying = ModelPolicy.from_folder(result.model_dir)
    got = copying(asked, TOOLS)
    assert json.loads(got["tool_calls"][0]["function"]["arguments"]) == {"order_id": "A86673"}


@pytest.mark.timeout(300)
def test_a_trained_model_quotes_the_users_number_with_the_rule(tmp_path: Path) -> None:
    """The same for a value quoted in a reply: the memorised number plain, the user's with the rule."""
    from compiler.config import TrainConfig
    from compiler.simulate import ModelPolicy
    from compiler.train import train

    told = {"tools": TOOLS, "messages": [
        {"role": "user", "content": "Where is my order?"},
        {"role": "assistant", "content": "Order A11111 is on its way."},
    ]}
    cfg = TrainConfig(base_model="scratch:tiny", batch_size=4, max_steps=100, eval_steps=1000, vocab_size=300,
                      logging_steps=1000, learning_rate=0.005, copy_arguments=True)
    result = train([told] * 16, [told], tmp_path / "run", cfg, echo=lambda _s: None)
    where = [{"role": "user", "content": "Where is my order? It is A86673."}]
    plain = ModelPolicy.from_folder(result.model_dir)(where, TOOLS)["content"]
    assert "A11111" in plain and "A86673" not in plain, plain
    write_copied(result.model_dir, {"": {"content": {"from": ["user"], "shapes": ["A9"], "max_chars": 6}}})
    assert ModelPolicy.from_folder(result.model_dir)(where, TOOLS)["content"] == "Order A86673 is on its way."
