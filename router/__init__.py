"""Per-request decisions for tiergate, as pure functions: which model (route) and what context (trim).

No I/O, no network, no global state: the gateway passes plain data in (request bodies, counts,
stored model bytes) and records the values that come back. Every decision takes well under 1 ms
(`python -m bench.router.decision_latency`).

Routing::

    from router import RequestFeatures, RoutePolicy, decide_route

    policy = RoutePolicy.from_config("support", {"kind": "rules", "frontier": "gpt-4o", "cheap": "gpt-4o-mini",
                                                 "rules": [{"max_prompt_tokens": 800, "route": "cheap"}]})
    decision = decide_route(RequestFeatures.from_request(body), policy, learned=None)
    decision.model, decision.tier, decision.reason      # "gpt-4o-mini", "routed", "rule 0 matched (...)"

- `RoutePolicy.from_config(workflow, section)`: kinds `frontier`, `rules`, `learned`, `cascade`;
  `PolicyConfigError` names the workflow and the key.
- `decide_route(features, policy, learned) -> RouteDecision(model, tier, reason, score, cascade, ...)`;
  a learned policy without a trained, calibrated router with enough labels falls back to the frontier
  and says why in `reason`.
- `check_cascade(request, cheap_response) -> CascadeVerdict(ok, failed_check, detail)`: escalate when
  not ok. `compare_answers(frontier_response, cheap_response, request, verdict=None) -> ShadowLabel`.
- `LearnedRouter.fit(features, labels)`, `.score(features)`, `.with_threshold(t)`, `.to_bytes()` /
  `LearnedRouter.from_bytes(blob)`; `out_of_fold_scores(...)` and `calibrate_threshold(scores,
  cheap_quality, target_retention, RouteCosts(...), confidence=None) -> Calibration(threshold,
  expected_retention, cheap_share, ...)` set the threshold from the one knob, the quality retention
  (on its point estimate, or on a one-sided lower bound with `confidence`, e.g. `policy.confidence`).
- `DemonstrationBank.build(exchanges)` and `nearest_demonstrations(features, bank, k)` for
  inference-time distillation.

Trimming::

    result = trim_tools(body["tools"], usage, tools_called(body["messages"]), keep={"handoff"},
                        min_requests=50, holdout=in_holdout(conversation_id, 0.05))
    deduped = dedupe_preloads(body["messages"], min_chars=1000)
    count_prompt_tokens(deduped.messages, result.tools, "openai/gpt-4o")

- `ToolUsage` holds per-workflow call counts (`record`, `to_dict`, `from_dict`); `TrimResult(tools,
  dropped, reason)`; `PreloadResult(messages, removed_blocks, removed_chars)`.
- Trimming never hides a tool: `offer_tools(tools, keep)` sends the kept ones in their order plus the
  `LOAD_TOOLS` helper (`load_tools_helper(left_out)`) naming the rest; `helper_requests(reply)` reads
  which names a reply asked it for, and `trim_tools(..., loaded=...)` keeps them on later turns.

Offline: `evaluate_router(EvalData(...), mode, target, costs, seed) -> EvalReport` and
`routing_curve(...) -> RoutingCurve` (APGR, CPT) back `tiergate router eval` (see `router/cli.py`).
"""

from ._calibrate import Calibration, RouteCosts, calibrate_threshold
from ._cascade import CascadeVerdict, ShadowLabel, check_cascade, compare_answers
from ._decisions import RouteDecision, decide_route
from ._distill import Demonstration, DemonstrationBank, nearest_demonstrations
from ._eval import EvalData, EvalReport, evaluate_router
from ._features import RequestFeatures
from ._learned import LearnedRouter, out_of_fold_scores
from ._metrics import RoutingCurve, routing_curve
from ._policy import PolicyConfigError, RoutePolicy, RouteRule
from ._signals import response_signals
from ._tokens import count_prompt_tokens, encoding_name_for
from ._trim_helper import LOAD_TOOLS, helper_requests, load_tools_helper, offer_tools
from ._trim_preload import PreloadResult, dedupe_preloads
from ._trim_tools import ToolUsage, TrimResult, in_holdout, tools_called, trim_tools

__all__ = [
    "Calibration",
    "CascadeVerdict",
    "Demonstration",
    "DemonstrationBank",
    "EvalData",
    "EvalReport",
    "LOAD_TOOLS",
    "LearnedRouter",
    "PolicyConfigError",
    "PreloadResult",
    "RequestFeatures",
    "RouteCosts",
    "RouteDecision",
    "RoutePolicy",
    "RouteRule",
    "RoutingCurve",
    "ShadowLabel",
    "ToolUsage",
    "TrimResult",
    "calibrate_threshold",
    "check_cascade",
    "compare_answers",
    "count_prompt_tokens",
    "decide_route",
    "dedupe_preloads",
    "encoding_name_for",
    "evaluate_router",
    "helper_requests",
    "in_holdout",
    "load_tools_helper",
    "nearest_demonstrations",
    "offer_tools",
    "out_of_fold_scores",
    "response_signals",
    "routing_curve",
    "tools_called",
    "trim_tools",
]
