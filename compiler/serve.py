"""python -m compiler.serve DIR [--host 127.0.0.1] [--port 8100]   (also: tiergate serve-model DIR)

Serves a compiled artifact over the OpenAI chat API so the gateway routes to it with no code change.
With vLLM installed and a GPU present it runs ``vllm serve`` (``vllm_command``: the artifact's tool-call
parser, greedy defaults) on a loopback port behind a thin front (``create_vllm_front``) that restores the
system prompt and tools the gateway strips and pins greedy decoding; otherwise a built-in FastAPI + transformers server runs (on the GPU in
bf16 when there is one, else the CPU), parsing tool calls with the parser of ``compiler.toolcalls``: ``POST /v1/chat/completions`` (stream and not, tool calls),
``GET /v1/models``, ``GET /healthz``.

Decoding is greedy whatever ``temperature`` says: a compiled workflow model is deterministic by design
(the eval gate measured it greedy). Requests without a system message get the artifact's minimal
runtime system prompt, and requests without ``tools`` get the artifact's tools, as in training.
"""


import argparse
import json
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .artifact import MANIFEST, resolve_artifact
from .toolcalls import CALL_CLOSE, CALL_OPEN, parse_assistant_text

DEFAULT_PORT = 8100


class ServeError(ValueError):
    """The model folder cannot be served; the message says why."""


def vllm_available() -> bool:
    """vLLM importable, its CLI on PATH and a CUDA device visible (checked lazily, no heavy import)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None or shutil.which("vllm") is None:
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def vllm_command(model_dir: Path, host: str, port: int, name: str, manifest: dict[str, Any] | None = None,
                 dtype: str = "bfloat16") -> list[str]:
    """The ``vllm serve`` line for an artifact.

    - ``--enable-auto-tool-choice --tool-call-parser`` from the manifest: without them vLLM answers HTTP 400
      to any request with ``tools``; the parser is the one the round-trip check ran with.
    - ``--generation-config auto`` reads the artifact's ``generation_config.json`` (written at training: its
      end-of-turn stop ids, no sampling defaults), and ``--override-generation-config`` makes temperature 0
      the default, so a request that sets nothing is decoded greedily, as the gate measured. A client that
      sends its own temperature still gets it; ``vllm`` (the old choice here) ignored the stop ids as well.
    - ``--dtype bfloat16``: the gate runs on GPU in bf16 (``base_model.accelerator``).
    """
    cmd = ["vllm", "serve", str(model_dir), "--host", host, "--port", str(port), "--served-model-name", name,
           "--dtype", dtype, "--generation-config", "auto",
           "--override-generation-config", json.dumps({"temperature": 0.0})]
    parser = (manifest or {}).get("tool_call_parser")
    if parser:
        cmd += ["--enable-auto-tool-choice", "--tool-call-parser", str(parser)]
    return cmd


class ChatEngine:
    """Model + tokenizer + defaults from the manifest; one generation at a time (CPU-bound anyway)."""

    def __init__(self, model_dir: Path) -> None:
        from .simulate import ModelPolicy

        self.dir = model_dir
        manifest = {}
        if (model_dir / MANIFEST).is_file():
            manifest = json.loads((model_dir / MANIFEST).read_text())
        self.name: str = manifest.get("workflow") or model_dir.name
        self.system_prompt: str = manifest.get("system_prompt") or ""
        self.tools: list[dict[str, Any]] = manifest.get("tools") or []
        self.policy = ModelPolicy.from_folder(model_dir)
        self.tokenizer = self.policy.tokenizer
        self.lock = threading.Lock()
        self.created = int(time.time())

    def prepare(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ServeError("`messages` must be a non-empty list of chat messages.")
        msgs = [dict(m) for m in messages]
        if msgs[0].get("role") not in ("system", "developer") and self.system_prompt:
            msgs.insert(0, {"role": "system", "content": self.system_prompt})
        for m in msgs:
            if m.get("role") == "developer":
                m["role"] = "system"
            if isinstance(m.get("content"), list):
                m["content"] = "".join(p.get("text", "") for p in m["content"] if isinstance(p, dict))
        tools = body.get("tools") or self.tools
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or 256
        return msgs, tools, int(limit)

    def stream_text(self, msgs: list[dict[str, Any]], tools: list[dict[str, Any]], limit: int,
                    usage: dict[str, int]) -> Iterator[str]:
        """Yield decoded text deltas; holds back a partial UTF-8 character until it completes."""
        with self.lock:
            ids = self.policy.prompt_ids(msgs, tools)
            sources = self.policy.copy_sources(msgs, tools)
            usage["prompt_tokens"] = len(ids)
            new: list[int] = []
            sent = ""
            finished = False
            for tok in self.policy.generate_ids(ids, limit, sources):
                new.append(tok)
                text = self.tokenizer.decode(new, skip_special_tokens=False)
                if text.endswith("\ufffd"):
                    continue
                if len(text) > len(sent):
                    yield text[len(sent):]
                    sent = text
            else:
                finished = len(new) < limit
            usage["completion_tokens"] = len(new)
            usage["finished"] = int(finished)
            text = self.tokenizer.decode(new, skip_special_tokens=False)
            if len(text) > len(sent):
                yield text[len(sent):]


def create_app(model_dir: str | Path) -> Any:
    """The CPU server's FastAPI app (the model loads here, not at import time).

    No ``from __future__ import annotations`` in this module: FastAPI resolves the endpoint's
    ``request: Request`` annotation at runtime, and ``Request`` is imported inside this function.
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

    folder = resolve_artifact(model_dir)
    engine = ChatEngine(folder)
    app = FastAPI(title=f"tiergate compiled model: {engine.name}")

    def error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
        kind = "invalid_request_error" if status < 500 else "server_error"
        return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                            status_code=status)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": engine.name}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [
            {"id": engine.name, "object": "model", "created": engine.created, "owned_by": "tiergate"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        try:
            body = await request.json()
        except ValueError:
            return error(400, "request body is not JSON; send an OpenAI chat completion request.")
        if not isinstance(body, dict):
            return error(400, "request body must be a JSON object.")
        model = body.get("model") or engine.name
        if model != engine.name:
            return error(404, f"The model `{model}` does not exist; this server serves `{engine.name}`.",
                         "model", "model_not_found")
        try:
            msgs, tools, limit = engine.prepare(body)
        except ServeError as exc:
            return error(400, str(exc), "messages")
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        usage: dict[str, int] = {}

        def finish(text: str) -> tuple[dict[str, Any], str]:
            msg = parse_assistant_text(text, engine.policy.end_tokens, engine.policy.special_tokens)
            if msg.get("tool_calls"):
                return msg, "tool_calls"
            return msg, "stop" if usage.get("finished", 1) else "length"

        def usage_obj() -> dict[str, int]:
            p, c = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
            return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

        if not body.get("stream"):
            text = await run_in_threadpool(lambda: "".join(engine.stream_text(msgs, tools, limit, usage)))
            msg, reason = finish(text)
            return {
                "id": cid, "object": "chat.completion", "created": created, "model": engine.name,
                "choices": [{"index": 0, "message": msg, "finish_reason": reason, "logprobs": None}],
                "usage": usage_obj(),
            }

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], reason: str | None = None) -> str:
            data = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": engine.name,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}]}
            return f"data: {json.dumps(data)}\n\n"

        def clean(piece: str) -> str:  # special tokens leave streamed content as they leave the whole message
            for tok in engine.policy.special_tokens:
                if tok not in (CALL_OPEN, CALL_CLOSE):
                    piece = piece.replace(tok, "")
            return piece

        async def events() -> Any:
            yield chunk({"role": "assistant", "content": ""})
            text = ""
            sent = 0  # characters of `text` streamed as content
            in_call = False
            async for delta in iterate_in_threadpool(engine.stream_text(msgs, tools, limit, usage)):
                text += delta
                if in_call:
                    continue
                if CALL_OPEN in text:  # from here on it is a tool call: sent whole, parsed, at the end
                    head = text[sent:text.index(CALL_OPEN)]
                    if head.strip():
                        yield chunk({"content": head})
                    in_call = True
                    continue
                # hold back a tail that may be the start of `<tool_call>` split over several tokens
                keep = next((k for k in range(len(CALL_OPEN) - 1, 0, -1) if text.endswith(CALL_OPEN[:k])), 0)
                if len(text) - keep > sent and (piece := clean(text[sent:len(text) - keep])):
                    yield chunk({"content": piece})
                sent = max(sent, len(text) - keep)
            if not in_call and len(text) > sent and (piece := clean(text[sent:])):
                yield chunk({"content": piece})
            msg, reason = finish(text)
            for i, call in enumerate(msg.get("tool_calls") or []):
                yield chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                             "function": call["function"]}]})
            yield chunk({}, reason)
            if include_usage:
                data = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": engine.name,
                        "choices": [], "usage": usage_obj()}
                yield f"data: {json.dumps(data)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def vllm_request(body: dict[str, Any], manifest: dict[str, Any], served_name: str) -> dict[str, Any]:
    """What the front puts before vLLM: the request as the gate measured the model.

    The gateway strips the system prompt and ``tools`` for a compiled route (the weights hold them), but the
    model was trained with both in its prompt, and vLLM runs its tool-call parser only for requests that
    carry ``tools``; both come back from the manifest here, as the built-in server does. Temperature is
    pinned to 0: vLLM has no switch that stops a client's sampling settings, and the gate measured greedy.
    """
    out = dict(body)
    out["model"] = served_name
    msgs = [dict(m) for m in body.get("messages") or []]
    system = manifest.get("system_prompt") or ""
    if system and (not msgs or msgs[0].get("role") not in ("system", "developer")):
        msgs.insert(0, {"role": "system", "content": system})
    out["messages"] = msgs
    if not body.get("tools") and manifest.get("tools"):
        out["tools"] = manifest["tools"]
        out.setdefault("tool_choice", "auto")
    out["temperature"] = 0.0
    for key in ("top_p", "top_k", "min_p", "seed", "n"):
        out.pop(key, None)
    return out


def create_vllm_front(model_dir: str | Path, upstream: str) -> Any:
    """An OpenAI front for a ``vllm serve`` process at ``upstream``: requests pass through ``vllm_request``,
    answers (streamed or not) come back byte for byte, errors keep vLLM's status and OpenAI shape."""
    import contextlib

    import httpx
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse

    folder = resolve_artifact(model_dir)
    manifest = json.loads((folder / MANIFEST).read_text()) if (folder / MANIFEST).is_file() else {}
    name = manifest.get("workflow") or folder.name
    client = httpx.AsyncClient(base_url=upstream, timeout=httpx.Timeout(600.0, connect=5.0))

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> Any:
        yield
        await client.aclose()

    app = FastAPI(title=f"tiergate compiled model (vLLM): {name}", lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> Any:
        try:
            ok = (await client.get("/health")).status_code == 200
        except httpx.HTTPError:
            ok = False
        return JSONResponse({"status": "ok" if ok else "starting", "model": name}, status_code=200 if ok else 503)

    @app.get("/v1/models")
    async def models() -> Any:
        up = await client.get("/v1/models")
        return Response(up.content, status_code=up.status_code, media_type="application/json")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return JSONResponse({"error": {"message": "request body must be a JSON object.",
                                           "type": "invalid_request_error", "param": None, "code": None}},
                                status_code=400)
        if (body.get("model") or name) != name:
            return JSONResponse({"error": {"message": f"The model `{body['model']}` does not exist; this server "
                                           f"serves `{name}`.", "type": "invalid_request_error", "param": "model",
                                           "code": "model_not_found"}}, status_code=404)
        req = client.build_request("POST", "/v1/chat/completions", json=vllm_request(body, manifest, name))
        up = await client.send(req, stream=True)
        if not body.get("stream") or up.status_code != 200:
            content = await up.aread()
            await up.aclose()
            return Response(content, status_code=up.status_code, media_type="application/json")

        async def relay() -> Any:
            try:
                async for piece in up.aiter_raw():
                    yield piece
            finally:
                await up.aclose()

        return StreamingResponse(relay(), media_type="text/event-stream")

    return app


def serve_model(model_dir: str | Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                backend: str = "auto") -> None:
    """Run the server in the foreground: vLLM where possible (``backend='auto'``), else the built-in server.

    With vLLM, ``vllm serve`` listens on a loopback port of its own and the front (``create_vllm_front``)
    on ``host:port``; the front ends vLLM when it stops.
    """
    folder = resolve_artifact(model_dir)
    if backend not in ("auto", "vllm", "cpu"):
        raise ServeError(f"unknown backend `{backend}`; use auto, vllm or cpu.")
    import uvicorn

    if backend == "vllm" or (backend == "auto" and vllm_available()):
        if not vllm_available():
            raise ServeError("backend `vllm` needs vLLM installed and a CUDA GPU; use `--backend cpu`.")
        import socket
        import subprocess

        manifest = json.loads((folder / MANIFEST).read_text()) if (folder / MANIFEST).is_file() else {}
        from .copying import read_copied

        if read_copied(folder):  # vLLM has no per-request hook for it; say so rather than serve differently silently
            print("warning: this artifact decodes copied tool arguments as copies of the conversation "
                  "(copying.json; its gate measured that); vLLM serves it without that rule. "
                  "`--backend cpu` serves it as measured.", file=sys.stderr)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            inner = int(sock.getsockname()[1])
        cmd = vllm_command(folder, "127.0.0.1", inner, manifest.get("workflow") or folder.name, manifest)
        proc = subprocess.Popen(cmd)
        try:
            uvicorn.run(create_vllm_front(folder, f"http://127.0.0.1:{inner}"), host=host, port=port,
                        log_level="warning")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        return
    uvicorn.run(create_app(folder), host=host, port=port, log_level="warning")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m compiler.serve", description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="artifact folder (or the compile --out folder)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--backend", default="auto", choices=["auto", "vllm", "cpu"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        serve_model(args.model_dir, args.host, args.port, args.backend)
    except (ServeError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
