"""Calls to upstream providers, with per-model timeouts, retries with backoff, and fallbacks.

    upstreams = Upstreams(settings); await upstreams.start()
    result = await upstreams.complete("gpt-4o", body)            # non-stream
    opened = await upstreams.open_stream("gpt-4o", body)         # status checked, bytes not yet read

OpenAI-compatible upstreams (OpenAI, vLLM, any `api_base`) are forwarded over one pooled aiohttp
session: their bytes pass through without re-serialising. aiohttp rather than httpx on this path:
in a local loopback measurement (bench/overhead) httpx's client cost ~3x the CPU per request. Other
providers go through litellm's translation, imported only when such a model is configured.
Third-party exceptions are translated here into the gateway's catalogue (errors.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from gateway.errors import UpstreamError, UpstreamTimeout, UpstreamTruncated, UpstreamUnavailable
from gateway.settings import ModelConfig, Settings

log = logging.getLogger("tiergate.upstream")

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
# an upstream that rejects the key or does not know the model may still be served by a fallback
FALLBACK_STATUS = RETRYABLE_STATUS | {401, 403, 404}
BACKOFF_BASE = 0.25
BACKOFF_CAP = 8.0


@dataclass
class Completion:
    model: ModelConfig
    body: bytes
    parsed: dict[str, Any]
    attempts: int


@dataclass
class OpenStream:
    """An upstream stream whose status was OK; `lines` yields its raw SSE bytes in arbitrary blocks."""

    model: ModelConfig
    lines: AsyncIterator[bytes]
    attempts: int
    close: Any = field(default=None)


def _backoff(attempt: int, retry_after: str | None) -> float:
    if retry_after:
        try:
            return min(float(retry_after), BACKOFF_CAP)
        except ValueError:
            pass
    return min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt) * (0.5 + random.random() / 2)


def _auth_headers(model: ModelConfig) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if model.api_key_env:
        key = os.environ.get(model.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
    return headers


def upstream_body(model: ModelConfig, body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    out = dict(body)
    out["model"] = model.upstream_model
    if stream:
        opts = dict(out.get("stream_options") or {})
        opts["include_usage"] = True  # the ledger needs usage; the gateway hides it again if unasked
        out["stream_options"] = opts
    return out


_CONNECT_TEXT = (
    "cannot connect to host",
    "connection refused",
    "connect call failed",
    "name or service not known",
)


def _connect_failure(exc: BaseException) -> bool:
    """litellm reports a refused connection as a 500 of its own; the cause chain or its text tells."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if (
            isinstance(seen, (ConnectionError, aiohttp.ClientConnectionError))
            or "ConnectError" in type(seen).__name__
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    text = str(exc).lower()
    return any(t in text for t in _CONNECT_TEXT)


def _unreachable(model: ModelConfig) -> UpstreamUnavailable:
    # the cause (refused, reset, DNS) goes to the log; the client learns which model, not where it lives
    return UpstreamUnavailable(f"upstream `{model.name}` is unreachable; try again later", status=502)


class _Retry(Exception):
    def __init__(self, error: UpstreamError, retry_after: str | None = None, fallback_ok: bool = True):
        self.error = error
        self.retry_after = retry_after
        self.fallback_ok = fallback_ok


class Upstreams:
    def __init__(self, settings: Settings):
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._litellm: Any = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=1000, ttl_dns_cache=300, keepalive_timeout=60
        )
        self._session = aiohttp.ClientSession(
            connector=connector, json_serialize=lambda o: orjson.dumps(o).decode(), auto_decompress=True
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _chain(self, model_name: str) -> list[ModelConfig]:
        first = self._settings.model(model_name)
        assert first is not None
        chain = [first]
        for name in first.fallbacks:
            fb = self._settings.model(name)
            if fb is not None and fb not in chain:
                chain.append(fb)
        return chain

    async def _attempts(self, model_name: str, op: Any) -> Any:
        """Run `op(model)` over the fallback chain with retries; return (result, attempts)."""
        attempts = 0
        last: UpstreamError | None = None
        for model in self._chain(model_name):
            for attempt in range(model.max_retries + 1):
                attempts += 1
                try:
                    return await op(model), attempts
                except _Retry as r:
                    last = r.error
                    if not r.fallback_ok:
                        raise r.error from None
                    if r.error.status not in RETRYABLE_STATUS or attempt == model.max_retries:
                        break
                    delay = _backoff(attempt, r.retry_after)
                    log.info(
                        "upstream %s: %s; retry %d in %.2fs", model.name, r.error.message, attempt + 1, delay
                    )
                    await asyncio.sleep(delay)
            if last is not None and last.status not in FALLBACK_STATUS:
                break
        assert last is not None
        last.attempts = attempts  # type: ignore[attr-defined]
        raise last

    # ---------------------------------------------------------------- OpenAI-compatible pass-through

    def _timeout(self, model: ModelConfig) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=model.timeout, connect=model.connect_timeout)

    async def _post(self, model: ModelConfig, body: dict[str, Any]) -> aiohttp.ClientResponse:
        assert self._session is not None
        url = f"{model.base_url}/chat/completions"
        try:
            resp = await self._session.post(
                url, data=orjson.dumps(body), headers=_auth_headers(model), timeout=self._timeout(model)
            )
        except TimeoutError:
            raise _Retry(
                UpstreamTimeout(f"upstream `{model.name}` timed out after {model.timeout:g}s")
            ) from None
        except aiohttp.ClientError as exc:
            log.warning("upstream %s unreachable: %s", model.name, exc)
            raise _Retry(_unreachable(model)) from None
        if resp.status >= 400:
            try:
                raw = await resp.read()
            except (aiohttp.ClientError, TimeoutError):
                raw = b""
            finally:
                resp.release()
            status = resp.status if resp.status < 500 or resp.status in (502, 503, 504) else 502
            retry_after = resp.headers.get("Retry-After")
            err = UpstreamError(
                f"upstream `{model.name}` answered HTTP {resp.status}",
                status=status,
                body=raw,
                # a 429's wait is the client's to honour too, once the gateway's own retries are spent
                headers={"Retry-After": retry_after} if retry_after and resp.status == 429 else None,
            )
            raise _Retry(err, retry_after, fallback_ok=resp.status in FALLBACK_STATUS)
        return resp

    async def complete(self, model_name: str, body: dict[str, Any]) -> Completion:
        async def op(model: ModelConfig) -> Completion:
            if not model.openai_compatible:
                return await self._litellm_complete(model, body)
            resp = await self._post(model, upstream_body(model, body, stream=False))
            try:
                raw = await resp.read()
            except TimeoutError:
                raise _Retry(
                    UpstreamTimeout(f"upstream `{model.name}` timed out reading the reply")
                ) from None
            except aiohttp.ClientError as exc:
                log.warning("upstream %s broke off its reply: %s", model.name, exc)
                raise _Retry(
                    UpstreamTruncated(f"upstream `{model.name}` broke off its reply before the end")
                ) from None
            finally:
                resp.release()
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise _Retry(UpstreamError(f"upstream `{model.name}` sent a body that is not JSON")) from None
            if not isinstance(parsed, dict):
                raise _Retry(
                    UpstreamError(f"upstream `{model.name}` sent JSON that is not a chat completion object")
                )
            return Completion(model, raw, parsed, 0)

        result, attempts = await self._attempts(model_name, op)
        result.attempts = attempts
        return result

    async def open_stream(self, model_name: str, body: dict[str, Any]) -> OpenStream:
        async def op(model: ModelConfig) -> OpenStream:
            if not model.openai_compatible:
                return await self._litellm_stream(model, body)
            resp = await self._post(model, upstream_body(model, body, stream=True))

            async def lines() -> AsyncIterator[bytes]:
                # whatever bytes have arrived, not line by line: the relay re-frames events itself,
                # and one write per read instead of per event halves streaming overhead (bench/overhead)
                try:
                    async for block in resp.content.iter_any():
                        yield block
                except TimeoutError:
                    raise UpstreamTimeout(f"upstream `{model.name}` stream timed out") from None
                except aiohttp.ClientError as exc:
                    log.warning("upstream %s stream broke: %s", model.name, exc)
                    raise UpstreamUnavailable(f"upstream `{model.name}` broke off the stream") from None

            # close(), not release(): an unfinished stream's connection must be dropped, which is
            # also how a client disconnect cancels the upstream generation.
            return OpenStream(model, lines(), 0, close=resp.close)

        result, attempts = await self._attempts(model_name, op)
        result.attempts = attempts
        return result

    # ---------------------------------------------------------------- litellm translation

    def _lite(self) -> Any:
        if self._litellm is None:
            # the remote price-map refresh would hang offline and change prices under a running ledger
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            import litellm

            litellm.drop_params = False
            litellm.suppress_debug_info = True
            self._litellm = litellm
        return self._litellm

    def _litellm_kwargs(self, model: ModelConfig, body: dict[str, Any]) -> dict[str, Any]:
        kw = {k: v for k, v in body.items() if k not in ("model",)}
        kw.update(model=model.upstream, timeout=model.timeout, num_retries=0)
        if model.api_base:
            kw["api_base"] = model.api_base
        if model.api_key_env and os.environ.get(model.api_key_env):
            kw["api_key"] = os.environ[model.api_key_env]
        return kw

    def _translate_litellm_error(self, model: ModelConfig, exc: Exception) -> _Retry:
        """The same errors as the pass-through path; litellm's text (hosts, ports, its own name) is logged only."""
        name = type(exc).__name__
        log.warning("upstream %s (litellm) failed: %s: %s", model.name, name, str(exc)[:500])
        if "Timeout" in name:
            return _Retry(UpstreamTimeout(f"upstream `{model.name}` timed out after {model.timeout:g}s"))
        if "Connection" in name or _connect_failure(exc):
            return _Retry(_unreachable(model))
        try:
            status = int(getattr(exc, "status_code", 502) or 502)
        except (TypeError, ValueError):
            status = 502
        if status == 408:
            return _Retry(UpstreamTimeout(f"upstream `{model.name}` timed out after {model.timeout:g}s"))
        shown = status if status < 500 or status in (502, 503, 504) else 502
        headers = getattr(getattr(exc, "response", None), "headers", None) or {}
        retry_after = headers.get("retry-after") if hasattr(headers, "get") else None
        return _Retry(
            UpstreamError(
                f"upstream `{model.name}` answered HTTP {status}",
                status=shown,
                headers={"Retry-After": retry_after} if retry_after and status == 429 else None,
            ),
            retry_after,
            fallback_ok=status in FALLBACK_STATUS,
        )

    async def _litellm_complete(self, model: ModelConfig, body: dict[str, Any]) -> Completion:
        lite = self._lite()
        try:
            resp = await lite.acompletion(**self._litellm_kwargs(model, body))
        except Exception as exc:
            raise self._translate_litellm_error(model, exc) from None
        parsed = resp.model_dump(exclude_none=True)
        parsed.pop("_hidden_params", None)
        return Completion(model, orjson.dumps(parsed), parsed, 0)

    async def _litellm_stream(self, model: ModelConfig, body: dict[str, Any]) -> OpenStream:
        lite = self._lite()
        kw = self._litellm_kwargs(model, body)
        kw["stream"] = True
        kw["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        try:
            stream = await lite.acompletion(**kw)
        except Exception as exc:
            raise self._translate_litellm_error(model, exc) from None

        async def lines() -> AsyncIterator[bytes]:
            try:
                async for chunk in stream:
                    data = chunk.model_dump(exclude_none=True)
                    yield b"data: " + orjson.dumps(data) + b"\n"
                    yield b"\n"
            except Exception as exc:
                raise self._translate_litellm_error(model, exc).error from None
            yield b"data: [DONE]\n"

        return OpenStream(model, lines(), 0, close=None)
