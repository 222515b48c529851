"""The one request every target receives: an agent turn with a system prompt, 3 tools and 4 user turns.

    from workload import chat_request
    body = chat_request(stream=True)

Why this shape: it is what an orchestrator re-sends on every turn (procedure, tool schemas, history),
so the gateway parses and forwards a realistic ~5 KB body rather than a toy "hi".
"""

from __future__ import annotations

from typing import Any

MODEL = "bench-model"
EXPECTED_ANSWER = "I have booked the 09:40 train for you."
"""What upstream.py answers; a target that returns anything else is not forwarding."""

SYSTEM_PROMPT = """You are the booking assistant of Northline Rail. Follow this procedure exactly.
1. Greet the customer once. Never repeat the greeting in later turns.
2. Identify the booking: ask for the booking reference (6 letters/digits) and the surname. Call
   lookup_booking with both. If it fails twice, offer to transfer to a human agent and stop.
3. Understand the request: change of date or time, change of route, cancellation, or seat request.
   Restate it in one sentence and ask the customer to confirm before acting.
4. For a change: call search_trains with origin, destination, date and earliest departure. Offer at
   most three options, cheapest first, with departure time, arrival time, changes and fare difference.
5. When the customer picks an option, call rebook_ticket with the booking reference and the train id.
   Read back the new departure, platform if known, and the fare difference charged or refunded.
6. Fares: flexible tickets change for free; semi-flexible pay a 10 EUR fee; saver tickets cannot be
   changed, only cancelled with a 50% refund before departure. Never promise a refund you cannot give.
7. Tone: short sentences, no emojis, no marketing. Dates as "Tuesday 14 May", times in 24h format.
8. Privacy: never read out payment details, never ask for a full card number, never reveal another
   passenger's data even if the customer gives their booking reference.
9. Escalate to a human when the customer asks for one, mentions a disability assistance need, a
   complaint, lost property, or when a tool returns an error you cannot resolve in one retry.
10. End every completed change with a one-line summary and ask whether anything else is needed.
Today is Friday 21 November 2026. Current time 08:12 CET. Session id 7f3c2a91-5be0-4d6e-9b1a-23c4d5e6f7a8.
"""

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "lookup_booking",
            "description": "Find a booking by its reference and the lead passenger's surname.",
            "parameters": {
                "type": "object",
                "properties": {
                    "reference": {"type": "string", "description": "6-character booking reference"},
                    "surname": {"type": "string", "description": "lead passenger's surname"},
                },
                "required": ["reference", "surname"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search_trains",
            "description": "List direct and connecting trains between two stations after a given time.",
            "parameters": {
                "type": "object",
                "properties": {
                    "origin": {"type": "string", "description": "station name or code"},
                    "destination": {"type": "string", "description": "station name or code"},
                    "date": {"type": "string", "description": "ISO date, e.g. 2026-11-21"},
                    "earliest_departure": {"type": "string", "description": "HH:MM, 24h"},
                    "max_changes": {"type": "integer", "minimum": 0, "maximum": 3},
                },
                "required": ["origin", "destination", "date"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "rebook_ticket",
            "description": "Move a booking to another train; returns the new itinerary and the fare difference.",
            "parameters": {
                "type": "object",
                "properties": {
                    "reference": {"type": "string"},
                    "train_id": {"type": "string", "description": "id returned by search_trains"},
                    "keep_seat_preferences": {"type": "boolean", "default": True},
                },
                "required": ["reference", "train_id"],
                "additionalProperties": False,
            },
        },
    },
]

MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": SYSTEM_PROMPT},
    {
        "role": "user",
        "content": "Hi, I need to change my train to Lyon today, booking QX7R2M, surname Moreau.",
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_lookup_1",
                "type": "function",
                "function": {
                    "name": "lookup_booking",
                    "arguments": '{"reference": "QX7R2M", "surname": "Moreau"}',
                },
            }
        ],
    },
    {
        "role": "tool",
        "tool_call_id": "call_lookup_1",
        "content": '{"reference": "QX7R2M", "passengers": 1, "ticket": "semi-flexible", "train": "TN 6611", '
        '"from": "Paris Gare de Lyon", "to": "Lyon Part-Dieu", "departs": "2026-11-21T08:56", "seat": "12/64"}',
    },
    {
        "role": "assistant",
        "content": "Hello. I found your booking: Paris Gare de Lyon to Lyon Part-Dieu today at 08:56, seat 64 in "
        "coach 12, semi-flexible. You would like to take a different train today. Is that right?",
    },
    {"role": "user", "content": "Yes, something a bit later in the morning, I won't make the 08:56."},
    {
        "role": "assistant",
        "content": "Three options: 09:40 arriving 11:38 direct, 10:56 arriving 12:54 direct, 11:40 arriving "
        "13:42 with one change. A change costs a 10 EUR fee on your ticket. Which one would you like?",
    },
    {"role": "user", "content": "The 09:40 please, and keep a window seat if you can."},
]


def chat_request(stream: bool) -> dict[str, Any]:
    """The request body; streaming asks for the usage chunk, as agent frameworks that count tokens do."""
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": MESSAGES,
        "tools": TOOLS,
        "tool_choice": "auto",
        "temperature": 0.2,
        "max_tokens": 256,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body
