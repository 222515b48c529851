"""The gateway's one settings object: a YAML file, validated once, `${ENV}` references resolved.

    settings = load_settings("configs/tiergate.yaml")
    settings.model("gpt-4o").upstream   # "openai/gpt-4o"

Where the file comes from: `--config PATH`, else `TIERGATE_CONFIG`, else `configs/tiergate.yaml` in the
working directory, else the defaults embedded in the package (so `tiergate serve` works anywhere).
An invalid file raises `ConfigError` whose message names the file, the key and the problem; the CLI
prints that one line and exits 2.
"""

from __future__ import annotations

import hashlib
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

# litellm provider prefixes whose wire format is OpenAI's own: the gateway forwards their bytes over
# its pooled client instead of translating through litellm.
OPENAI_COMPATIBLE_PREFIXES = frozenset(
    {"openai", "hosted_vllm", "vllm", "openai_compatible", "custom_openai", "text-completion-openai"}
)
DEFAULT_API_BASES = {"openai": "https://api.openai.com/v1"}
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    """The config file is unusable; the message is one line naming the file, the key and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Strict):
    """USD per million tokens; overrides litellm's price map for this model."""

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)
    cached_input_per_million: float | None = Field(default=None, ge=0)


class ModelConfig(_Strict):
    name: str = Field(min_length=1, description="the name clients put in `model`")
    upstream: str = Field(min_length=1, description="litellm model string, e.g. `openai/gpt-4o`")
    api_base: str | None = None
    api_key_env: str | None = Field(default=None, description="environment variable holding the key")
    timeout: float = Field(default=120.0, gt=0, description="seconds for the whole upstream call")
    connect_timeout: float = Field(default=5.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10, description="on 429, 5xx and connection errors")
    fallbacks: tuple[str, ...] = Field(default=(), description="model names tried in order after retries")
    price: Price | None = None
    simulated: bool = Field(default=False, description="label a simulated provider as such in pages and logs")

    @field_validator("upstream")
    @classmethod
    def _has_provider(cls, value: str) -> str:
        if "/" not in value:
            raise ValueError(
                f"`{value}` has no provider prefix; write it as litellm does, e.g. `openai/{value}`"
            )
        return value

    @property
    def provider(self) -> str:
        return self.upstream.split("/", 1)[0]

    @property
    def upstream_model(self) -> str:
        return self.upstream.split("/", 1)[1]

    @property
    def openai_compatible(self) -> bool:
        return self.provider in OPENAI_COMPATIBLE_PREFIXES

    @property
    def base_url(self) -> str | None:
        base = self.api_base or DEFAULT_API_BASES.get(self.provider)
        return base.rstrip("/") if base else None


class WorkflowConfig(_Strict):
    model_config = ConfigDict(extra="allow", frozen=True)  # rung settings are owned by router/ and compiler/

    name: str = Field(min_length=1)
    frontier: str | None = None
    cheap: str | None = None
    flowchart: str | None = None


class StorageConfig(_Strict):
    url: str = "sqlite:///tiergate.db"
    redis_url: str | None = None


class LedgerConfig(_Strict):
    batch_size: int = Field(default=500, ge=1)
    flush_interval_ms: int = Field(default=200, ge=1)
    queue_max: int = Field(default=100_000, ge=100, description="records held in memory before back-pressure")
    degraded_seconds: float = Field(
        default=60.0, ge=0, description="/healthz says the ledger is degraded this long after a record was refused"
    )
    dead_letter_file: str | None = Field(
        default=None, description="JSONL file for records the store cannot take at all (else the error log)"
    )


class MetricsConfig(_Strict):
    require_admin_key: bool = Field(
        default=False, description="/metrics, /docs and /openapi.json need the admin key (when one is set)"
    )
    max_workflows: int = Field(
        default=100, ge=1, description="distinct `workflow` label values; later workflows count as `other`"
    )


# Rung settings every workflow gets, listed or found, unless the config's `defaults:` or the workflow's
# own entry says otherwise (per key; a mapping merges one level deep). gateway/proxy/defaults.py reads
# them; docs/identity.md says why each is safe on day one.
WORKFLOW_RUNG_KEYS = ("frontier", "cheap", "route", "trim", "judge", "capture", "propose")
SHIPPED_DEFAULTS: dict[str, Any] = {
    "trim": {"tools": True, "preloads": True},  # waits for `min_requests` of traffic before dropping a tool
    "route": {"kind": "learned"},  # only where a `cheap` model is named; nothing routes before calibration
    "propose": True,  # raise compile proposals when a workflow passes its payback point
    "capture": {"enabled": True, "retention_days": 30, "max_conversations": 10_000, "redact": ["cards"]},
}


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    state_refresh_seconds: float = Field(
        default=5.0, gt=0, description="how often routing/trimming state is rebuilt from the shared store"
    )


class AuthConfig(_Strict):
    admin_key: str | None = Field(default=None, description="defaults to $TIERGATE_ADMIN_KEY")
    key_cache_seconds: float = Field(default=10.0, ge=0)


class Settings(_Strict):
    server: ServerConfig = ServerConfig()
    storage: StorageConfig = StorageConfig()
    ledger: LedgerConfig = LedgerConfig()
    auth: AuthConfig = AuthConfig()
    metrics: MetricsConfig = MetricsConfig()
    models: tuple[ModelConfig, ...] = ()
    workflows: tuple[WorkflowConfig, ...] = ()
    loop: dict[str, Any] = Field(
        default_factory=dict, description="payback, proposals, canary (gateway/loop/payback.py)"
    )
    defaults: dict[str, Any] = Field(
        default_factory=dict,
        description="rung settings for every workflow, over SHIPPED_DEFAULTS (gateway/proxy/defaults.py)",
    )
    source: str = Field(default="<defaults>", description="where this came from; set by the loader")
    digest: str = Field(default="", description="sha256 of the file's text; stored with what it produced")

    @field_validator("loop")
    @classmethod
    def _loop_section(cls, value: dict[str, Any]) -> dict[str, Any]:
        from gateway.loop.payback import LoopConfig

        LoopConfig.from_dict(value)  # raises ValueError naming the key; the section stays plain data
        return value

    @field_validator("defaults")
    @classmethod
    def _defaults_section(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key not in WORKFLOW_RUNG_KEYS:
                raise ValueError(
                    f"defaults.{key}: unknown key; use the keys of a workflow entry: {', '.join(WORKFLOW_RUNG_KEYS)}"
                )
        return value

    @model_validator(mode="after")
    def _cross_check(self) -> Settings:
        names = [m.name for m in self.models]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"models: duplicate name `{sorted(dup)[0]}`; each model name must be unique")
        known = set(names)
        for i, m in enumerate(self.models):
            for fb in m.fallbacks:
                if fb not in known:
                    raise ValueError(
                        f"models[{i}].fallbacks: unknown model `{fb}`; list a configured model name"
                    )
        for key in ("frontier", "cheap"):
            val = self.defaults.get(key)
            if val is not None and val not in known:
                raise ValueError(f"defaults.{key}: unknown model `{val}`; list a configured model name")
        for i, w in enumerate(self.workflows):
            for key in ("frontier", "cheap"):
                val = getattr(w, key)
                if val is not None and val not in known:
                    raise ValueError(
                        f"workflows[{i}] (`{w.name}`).{key}: unknown model `{val}`; list a configured model name"
                    )
        return self

    # models the loop serves itself (a compiled artifact on a loopback port), known by name like configured ones
    _managed: dict[str, ModelConfig] = PrivateAttr(default_factory=dict)

    def model(self, name: str) -> ModelConfig | None:
        for m in self.models:
            if m.name == name:
                return m
        return self._managed.get(name)

    def manage_model(self, model: ModelConfig) -> None:
        """Make a model the loop serves (`gateway.loop.serving`) routable; configured names win."""
        self._managed[model.name] = model

    def unmanage_model(self, name: str) -> None:
        self._managed.pop(name, None)

    def workflow(self, name: str) -> WorkflowConfig | None:
        for w in self.workflows:
            if w.name == name:
                return w
        return None

    @property
    def admin_key(self) -> str | None:
        return self.auth.admin_key or os.environ.get("TIERGATE_ADMIN_KEY") or None


def _expand_env(node: Any, path: str, source: str) -> Any:
    """Replace `${NAME}` / `${NAME:-default}` in strings; a missing variable without default is an error."""
    if isinstance(node, dict):
        return {k: _expand_env(v, f"{path}.{k}" if path else str(k), source) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_env(v, f"{path}[{i}]", source) for i, v in enumerate(node)]
    if isinstance(node, str):

        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            value = os.environ.get(name)
            if value is None:
                if default is None:
                    raise ConfigError(
                        f"{source}: {path}: environment variable `{name}` is not set; "
                        f"export it or write `${{{name}:-default}}`"
                    )
                return default
            return value

        return _ENV_REF.sub(sub, node)
    return node


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def parse_settings(text: str, source: str) -> Settings:
    """Validate YAML text into Settings; raises ConfigError naming `source`, the key and the problem."""
    try:
        raw = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "somewhere"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{source}: {where}: {problem}; fix the YAML syntax") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: <top level>: expected a mapping of sections, got {type(raw).__name__}")
    # a section left with only comments in it parses as None: treat it as absent
    raw = {k: v for k, v in _expand_env(raw, "", source).items() if v is not None}
    raw.pop("source", None)
    raw.pop("digest", None)
    try:
        return Settings(**raw, source=source, digest=hashlib.sha256(text.encode()).hexdigest()[:16])
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key; check the spelling against configs/tiergate.yaml"
        elif err["type"] == "missing":
            msg = "required key is missing"
        if not err["loc"]:  # a cross-field check: its message names the key itself
            raise ConfigError(f"{source}: {msg}") from None
        loc = _loc(tuple(err["loc"]))
        if msg.startswith(loc + "."):  # the message already names the key below `loc`
            raise ConfigError(f"{source}: {msg}") from None
        raise ConfigError(f"{source}: {loc}: {msg}") from None


def default_config_text() -> str:
    return resources.files("gateway").joinpath("defaults/tiergate.yaml").read_text()


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Load the config: explicit path, else $TIERGATE_CONFIG, else ./configs/tiergate.yaml, else defaults."""
    chosen = path or os.environ.get("TIERGATE_CONFIG")
    if chosen is None and Path("configs/tiergate.yaml").is_file():
        chosen = "configs/tiergate.yaml"
    if chosen is None:
        return parse_settings(default_config_text(), "<embedded defaults>")
    p = Path(chosen)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"{p}: file not found; pass an existing file with --config or TIERGATE_CONFIG"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read it ({exc.strerror})") from None
    return parse_settings(text, str(p))
