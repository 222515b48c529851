"""USD cost of a call: litellm's price map, with the config's per-model overrides winning.

    prices = PriceBook.from_settings(settings)
    prices.cost("gpt-4o", prompt=1000, completion=200, cached=0)   # -> 0.0045

The map is read from the JSON file litellm ships, without importing litellm (seconds of start-up) and
without its remote refresh (no network here, and a price must not change under a running ledger).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from gateway.settings import ModelConfig, Settings


@dataclass(frozen=True)
class Rate:
    """USD per token."""

    input: float
    output: float
    cached_input: float


UNKNOWN = Rate(0.0, 0.0, 0.0)


def load_litellm_price_map() -> dict[str, Any]:
    spec = find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / "model_prices_and_context_window_backup.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _rate_from_entry(entry: dict[str, Any]) -> Rate | None:
    inp = entry.get("input_cost_per_token")
    out = entry.get("output_cost_per_token")
    if inp is None or out is None:
        return None
    cached = entry.get("cache_read_input_token_cost")
    return Rate(float(inp), float(out), float(cached if cached is not None else inp))


def rate_for(model: ModelConfig, price_map: dict[str, Any]) -> Rate | None:
    if model.price is not None:
        p = model.price
        cached = p.cached_input_per_million if p.cached_input_per_million is not None else p.input_per_million
        return Rate(p.input_per_million / 1e6, p.output_per_million / 1e6, cached / 1e6)
    for key in (model.upstream, model.upstream_model, model.name):
        entry = price_map.get(key)
        if isinstance(entry, dict):
            rate = _rate_from_entry(entry)
            if rate is not None:
                return rate
    return None


class PriceBook:
    """Per configured model name, its Rate; models with no known price cost 0 and are reported."""

    def __init__(self, rates: dict[str, Rate], unpriced: tuple[str, ...] = ()):
        self._rates = rates
        self.unpriced = unpriced

    @classmethod
    def from_settings(cls, settings: Settings) -> PriceBook:
        price_map = load_litellm_price_map()
        rates: dict[str, Rate] = {}
        unpriced = []
        for m in settings.models:
            rate = rate_for(m, price_map)
            if rate is None:
                unpriced.append(m.name)
            else:
                rates[m.name] = rate
        return cls(rates, tuple(unpriced))

    def set_rate(self, model_name: str, rate: Rate) -> None:
        """Price a model added while running (the loop's own compiled-model server)."""
        self._rates = self._rates | {model_name: rate}

    def rate(self, model_name: str) -> Rate:
        return self._rates.get(model_name, UNKNOWN)

    def cost(self, model_name: str, *, prompt: int, completion: int, cached: int = 0) -> float:
        r = self.rate(model_name)
        cached = min(cached, prompt)
        return (prompt - cached) * r.input + cached * r.cached_input + completion * r.output
