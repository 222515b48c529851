"""Non-OpenAI providers go through litellm's translation: here Anthropic's Messages API, faked locally."""

from __future__ import annotations

import openai


def test_anthropic_model_through_litellm(start_gateway, upstreams):
    gw = start_gateway(
        {
            "models": [
                {
                    "name": "claude",
                    "upstream": "anthropic/claude-sonnet-4-5",
                    "api_base": upstreams["frontier"].base,
                    "api_key_env": "TG_TEST_UPSTREAM_KEY",
                },
            ]
        }
    )
    c = openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0)
    resp = c.chat.completions.create(
        model="claude",
        max_tokens=50,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "bonjour"}],
    )
    assert resp.choices[0].message.content == "frontier: bonjour"
    sent = upstreams["frontier"].log()[-1]
    assert (
        sent["api"] == "anthropic" and sent["body"]["system"][0]["text"] == "Be brief."
        if isinstance(sent["body"]["system"], list)
        else sent["body"]["system"] == "Be brief."
    )
    assert sent["headers"]["x-api-key"].startswith("sk-upstream")

    chunks = list(
        c.chat.completions.create(
            model="claude",
            max_tokens=50,
            stream=True,
            messages=[{"role": "user", "content": "stream please"}],
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "frontier: stream please"
    rows = gw.wait_records(2)
    assert [r["prompt_tokens"] for r in rows] == [11, 11]
    assert rows[0]["completion_tokens"] == 2 and rows[0]["cost_usd"] > 0
