import router

PUBLIC = [
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


def test_public_names_are_pinned() -> None:
    assert router.__all__ == PUBLIC


def test_every_public_name_resolves() -> None:
    for name in router.__all__:
        assert getattr(router, name) is not None


def test_router_does_not_import_gateway() -> None:
    import pathlib

    for path in pathlib.Path(router.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert "import gateway" not in text and "from gateway" not in text, path
