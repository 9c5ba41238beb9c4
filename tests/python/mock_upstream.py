"""Threaded mock upstreams for the SDK tests: OpenAI, Anthropic Messages and Ollama native.

Each `MockUpstream(flavor)` listens on 127.0.0.1:<free port> in a daemon thread and speaks that provider's
wire format exactly (see /work/shared/wire-formats.md sections 1, 2.5-2.7, 4.2-4.5):

- openai:    POST /v1/chat/completions (JSON, or SSE `data:` chunks + usage chunk + `[DONE]`), GET /v1/models
- anthropic: POST /v1/messages (JSON, or SSE with `event:` lines, `ping`, final cumulative usage in
             `message_delta` like the recordings in shared/upstream-recordings/anthropic),
             POST /v1/messages/count_tokens (`{"input_tokens": count_tokens}`), GET /v1/models (has_more/after_id)
- ollama:    POST /api/chat (JSON, or NDJSON ending with a `done: true` line), GET /api/tags

Model-name fault modes (for batch tests, where replies cannot be scripted per line): a model containing
`-slow` answers after `slow_secs`; `-fail529` answers Anthropic's 529 overloaded (503 on the other
flavors); `-rl429` answers every other call with 429 and `retry-after: 1`. `max_inflight` is the highest
number of chat calls served at once since the last `reset`.

Tests script replies with `enqueue(Reply(...))` (one-shot, FIFO); otherwise `default_answer` is sent (a short
text unless a test sets it; `reset()` restores it).
Every request is recorded in `requests` (method, path, query, headers, json); `paths()` lists what was called.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CHAT_PATH = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages", "ollama": "/api/chat"}
MODELS_PATH = {"openai": "/v1/models", "anthropic": "/v1/models", "ollama": "/api/tags"}
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"


@dataclass
class ToolCall:
    id: str
    name: str
    input: dict


@dataclass
class Answer:
    text: list[str] = field(default_factory=lambda: ["Hello", " there!"])
    tool_calls: list[ToolCall] = field(default_factory=list)
    input_tokens: int = 11
    output_tokens: int = 6
    cache_read: int = 0
    cache_creation: int = 0

    @property
    def full_text(self) -> str:
        return "".join(self.text)


@dataclass
class Reply:
    """A scripted reply. `answer` renders in the flavor's format; `status`/`body` send a raw response.

    `error_after`: for streams, send this many events, then the flavor's in-band error event.
    `disconnect_after`: for streams, send this many events, then drop the connection.
    """

    answer: Answer | None = None
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    error_after: int | None = None
    disconnect_after: int | None = None


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    json: Any


def _fragments(s: str) -> list[str]:
    a, b = len(s) // 3, 2 * len(s) // 3
    return ["", s[:a], s[a:b], s[b:]]


# ---------------------------------------------------------------- OpenAI

def openai_usage(a: Answer) -> dict:
    prompt = a.input_tokens + a.cache_read + a.cache_creation
    return {"prompt_tokens": prompt, "completion_tokens": a.output_tokens,
            "total_tokens": prompt + a.output_tokens,
            "prompt_tokens_details": {"cached_tokens": a.cache_read, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


def openai_finish(a: Answer) -> str:
    return "tool_calls" if a.tool_calls else "stop"


def openai_completion(model: str, a: Answer) -> dict:
    msg: dict[str, Any] = {"role": "assistant", "content": a.full_text if a.text else None, "refusal": None,
                           "annotations": []}
    if a.tool_calls:
        msg["tool_calls"] = [{"id": c.id, "type": "function",
                              "function": {"name": c.name, "arguments": json.dumps(c.input)}} for c in a.tool_calls]
    return {"id": "chatcmpl-mock01", "object": "chat.completion", "created": 1760000000, "model": model,
            "system_fingerprint": "fp_mock", "service_tier": "default",
            "choices": [{"index": 0, "message": msg, "logprobs": None, "finish_reason": openai_finish(a)}],
            "usage": openai_usage(a)}


def openai_events(model: str, a: Answer, include_usage: bool) -> list[bytes]:
    def chunk(delta: dict, finish: str | None) -> dict:
        c = {"id": "chatcmpl-mock01", "object": "chat.completion.chunk", "created": 1760000000, "model": model,
             "system_fingerprint": "fp_mock",
             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            c["usage"] = None
        return c

    chunks = [chunk({"role": "assistant", "content": "" if a.text or not a.tool_calls else None,
                     "refusal": None}, None)]
    chunks += [chunk({"content": p}, None) for p in a.text]
    for i, c in enumerate(a.tool_calls):
        first, *rest = _fragments(json.dumps(c.input))
        chunks.append(chunk({"tool_calls": [{"index": i, "id": c.id, "type": "function",
                                             "function": {"name": c.name, "arguments": first}}]}, None))
        chunks += [chunk({"tool_calls": [{"index": i, "function": {"arguments": p}}]}, None) for p in rest if p]
    chunks.append(chunk({}, openai_finish(a)))
    if include_usage:
        chunks.append({"id": "chatcmpl-mock01", "object": "chat.completion.chunk", "created": 1760000000,
                       "model": model, "system_fingerprint": "fp_mock", "choices": [], "usage": openai_usage(a)})
    out = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks]
    out.append(b"data: [DONE]\n\n")
    return out


OPENAI_INBAND_ERROR = ("data: " + json.dumps({"error": {"message": "The server had an error processing your request.",
                                                        "type": "server_error", "param": None, "code": None}})
                       + "\n\n").encode()

# ---------------------------------------------------------------- Anthropic


def anthropic_message(model: str, a: Answer, output_tokens: int | None = None) -> dict:
    content: list[dict] = []
    if a.text:
        content.append({"type": "text", "text": a.full_text})
    content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.input} for c in a.tool_calls]
    return {"id": "msg_01MockXFDUDYJgAACzvnptvV", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": "tool_use" if a.tool_calls else "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": a.input_tokens, "cache_creation_input_tokens": a.cache_creation,
                      "cache_read_input_tokens": a.cache_read,
                      "output_tokens": a.output_tokens if output_tokens is None else output_tokens,
                      "service_tier": "standard"}}


def anthropic_events(model: str, a: Answer) -> list[bytes]:
    def ev(name: str, data: dict) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

    start = anthropic_message(model, a, output_tokens=1)
    start["content"], start["stop_reason"] = [], None
    out = [ev("message_start", {"type": "message_start", "message": start}), ev("ping", {"type": "ping"})]
    index = 0
    if a.text:
        out.append(ev("content_block_start", {"type": "content_block_start", "index": index,
                                              "content_block": {"type": "text", "text": ""}}))
        out += [ev("content_block_delta", {"type": "content_block_delta", "index": index,
                                           "delta": {"type": "text_delta", "text": p}}) for p in a.text]
        out.append(ev("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    for c in a.tool_calls:
        out.append(ev("content_block_start", {"type": "content_block_start", "index": index,
                                              "content_block": {"type": "tool_use", "id": c.id, "name": c.name,
                                                                "input": {}}}))
        out += [ev("content_block_delta", {"type": "content_block_delta", "index": index,
                                           "delta": {"type": "input_json_delta", "partial_json": p}})
                for p in _fragments(json.dumps(c.input))]
        out.append(ev("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    out.append(ev("message_delta", {"type": "message_delta",
                                    "delta": {"stop_reason": "tool_use" if a.tool_calls else "end_turn",
                                              "stop_sequence": None},
                                    # Current Anthropic repeats the cumulative input and cache counts here.
                                    "usage": {"input_tokens": a.input_tokens,
                                              "cache_creation_input_tokens": a.cache_creation,
                                              "cache_read_input_tokens": a.cache_read,
                                              "output_tokens": a.output_tokens}}))
    out.append(ev("message_stop", {"type": "message_stop"}))
    return out


ANTHROPIC_INBAND_ERROR = ("event: error\ndata: " + json.dumps(
    {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}) + "\n\n").encode()

ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                         404: "not_found_error", 429: "rate_limit_error", 500: "api_error",
                         529: "overloaded_error"}


def anthropic_error(status: int, message: str) -> dict:
    return {"type": "error", "error": {"type": ANTHROPIC_ERROR_TYPES.get(status, "api_error"), "message": message},
            "request_id": "req_011MockRequest"}


# ---------------------------------------------------------------- Ollama


def _ollama_tool_calls(a: Answer) -> list[dict]:
    return [{"id": c.id, "function": {"index": i, "name": c.name, "arguments": c.input}}
            for i, c in enumerate(a.tool_calls)]


def _ollama_metrics(a: Answer) -> dict:
    return {"done": True, "done_reason": "stop", "total_duration": 3244883583, "load_duration": 2969184542,
            "prompt_eval_count": a.input_tokens, "prompt_eval_duration": 141656333,
            "eval_count": a.output_tokens, "eval_duration": 133293625}


def ollama_chat(model: str, a: Answer) -> dict:
    msg: dict[str, Any] = {"role": "assistant", "content": a.full_text}
    if a.tool_calls:
        msg["tool_calls"] = _ollama_tool_calls(a)
    return {"model": model, "created_at": "2025-07-07T20:32:53.844124Z", "message": msg, **_ollama_metrics(a)}


def ollama_lines(model: str, a: Answer) -> list[bytes]:
    lines = [{"model": model, "created_at": "2025-10-26T17:15:24.097767Z",
              "message": {"role": "assistant", "content": p}, "done": False} for p in a.text]
    if a.tool_calls:
        lines.append({"model": model, "created_at": "2025-10-26T17:15:24.121485Z",
                      "message": {"role": "assistant", "content": "", "tool_calls": _ollama_tool_calls(a)},
                      "done": False})
    lines.append({"model": model, "created_at": "2025-10-26T17:15:24.166576Z",
                  "message": {"role": "assistant", "content": ""}, **_ollama_metrics(a)})
    return [(json.dumps(line) + "\n").encode() for line in lines]


OLLAMA_INBAND_ERROR = (json.dumps({"error": "an error was encountered while running the model"}) + "\n").encode()

# ---------------------------------------------------------------- server

DEFAULT_MODELS = {
    "openai": ["gpt-4o-mini", "gpt-4o"],
    "anthropic": ["claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001"],
    "ollama": ["llama3.2:latest", "hf.co/org/repo:Q4_K_M"],
}


class MockUpstream:
    def __init__(self, flavor: str):
        self.flavor = flavor
        self.requests: list[Recorded] = []
        self.queue: list[tuple[str, Reply]] = []
        self.models = list(DEFAULT_MODELS[flavor])
        self.count_tokens = 1234  # what the Anthropic mock's count_tokens answers
        self.default_answer = Answer()
        self.lock = threading.Lock()
        self.slow_secs = 0.3
        self.inflight = 0
        self.max_inflight = 0
        self.rl_calls = 0
        mock = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                mock._handle(self)

            def do_POST(self) -> None:
                mock._handle(self)

            def do_HEAD(self) -> None:  # connection probes: recorded, answered 200 without a body
                with mock.lock:
                    mock.requests.append(Recorded("HEAD", urlsplit(self.path).path, {}, {}, None))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        suffix = "/v1" if self.flavor == "openai" else ""
        return f"http://127.0.0.1:{self.port}{suffix}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def enqueue(self, reply: Reply, path: str | None = None) -> None:
        with self.lock:
            self.queue.append((path or CHAT_PATH[self.flavor], reply))

    def chat_requests(self) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.path == CHAT_PATH[self.flavor]]

    def requests_to(self, path: str) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def paths(self) -> list[str]:
        """`METHOD /path` of every request so far, in order."""
        with self.lock:
            return [f"{r.method} {r.path}" for r in self.requests]

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.queue.clear()
            self.count_tokens = 1234
            self.default_answer = Answer()
            self.max_inflight = 0
            self.rl_calls = 0

    def _model_fault(self, h: BaseHTTPRequestHandler, path: str, body: Any) -> bool:
        """Applies the model-name fault modes; True when a fault reply was sent."""
        if path != CHAT_PATH[self.flavor] or not isinstance(body, dict):
            return False
        model = str(body.get("model", ""))
        if "-slow" in model:
            time.sleep(self.slow_secs)
        if "-fail529" in model:
            if self.flavor == "anthropic":
                payload = json.dumps(anthropic_error(529, "Overloaded")).encode()
                self._send_whole(h, 529, {"content-type": "application/json"}, payload)
            else:
                payload = json.dumps({"error": {"message": "overloaded", "type": "server_error", "code": None}}).encode()
                self._send_whole(h, 503, {"content-type": "application/json"}, payload)
            return True
        if "-rl429" in model:
            with self.lock:
                self.rl_calls += 1
                limited = self.rl_calls % 2 == 1
            if limited:
                err = (anthropic_error(429, "Rate limited") if self.flavor == "anthropic"
                       else {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}})
                self._send_whole(h, 429, {"content-type": "application/json", "retry-after": "1"}, json.dumps(err).encode())
                return True
        return False

    # -- request handling

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        length = int(h.headers.get("content-length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        rec = Recorded(h.command, url.path, parse_qs(url.query), {k.lower(): v for k, v in h.headers.items()}, body)
        with self.lock:
            self.requests.append(rec)
            reply = next((r for p, r in self.queue if p == url.path), None)
            if reply is not None:
                self.queue.remove(next(pr for pr in self.queue if pr[1] is reply))
        reply = reply or Reply(answer=self.default_answer)
        chat = url.path == CHAT_PATH[self.flavor]
        if chat:
            with self.lock:
                self.inflight += 1
                self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            if self._model_fault(h, url.path, body):
                return
            self._reply(h, url, rec, body, reply)
        finally:
            if chat:
                with self.lock:
                    self.inflight -= 1

    def _reply(self, h: BaseHTTPRequestHandler, url: Any, rec: Recorded, body: Any, reply: Reply) -> None:
        if reply.answer is None:
            payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
            ctype = "text/html" if isinstance(reply.body, bytes) else "application/json"
            self._send_whole(h, reply.status, {"content-type": ctype, **reply.headers}, payload)
            return

        if url.path == MODELS_PATH[self.flavor] and h.command == "GET":
            self._send_whole(h, 200, {"content-type": "application/json"}, json.dumps(self._models(rec)).encode())
            return
        if self.flavor == "anthropic" and url.path == COUNT_TOKENS_PATH and h.command == "POST":
            self._send_whole(h, 200, {"content-type": "application/json", **reply.headers},
                             json.dumps({"input_tokens": self.count_tokens}).encode())
            return
        if url.path != CHAT_PATH[self.flavor] or h.command != "POST":
            self._send_whole(h, 404, {"content-type": "application/json"},
                             json.dumps({"error": f"mock: no route {h.command} {url.path}"}).encode())
            return

        req = body or {}
        model = req.get("model", "mock-model")
        stream = req.get("stream", self.flavor == "ollama")
        a = reply.answer
        if not stream:
            if self.flavor == "openai":
                out = openai_completion(model, a)
            elif self.flavor == "anthropic":
                out = anthropic_message(model, a)
            else:
                out = ollama_chat(model, a)
            self._send_whole(h, 200, {"content-type": "application/json", **reply.headers}, json.dumps(out).encode())
            return
        if self.flavor == "openai":
            include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
            events, ctype, err = openai_events(model, a, include_usage), "text/event-stream", OPENAI_INBAND_ERROR
        elif self.flavor == "anthropic":
            events, ctype, err = anthropic_events(model, a), "text/event-stream", ANTHROPIC_INBAND_ERROR
        else:
            events, ctype, err = ollama_lines(model, a), "application/x-ndjson", OLLAMA_INBAND_ERROR
        self._send_stream(h, events, ctype, reply, err)

    def _models(self, rec: Recorded) -> dict:
        if self.flavor == "openai":
            return {"object": "list", "data": [{"id": m, "object": "model", "created": 1721172741 + i,
                                                "owned_by": "system"} for i, m in enumerate(self.models)]}
        if self.flavor == "ollama":
            return {"models": [{"name": m, "model": m, "modified_at": "2025-05-04T17:37:44.706015396-07:00",
                                "size": 2019393189, "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
                                "details": {"parent_model": "", "format": "gguf", "family": "llama",
                                            "families": ["llama"], "parameter_size": "3.2B",
                                            "quantization_level": "Q4_K_M"}} for m in self.models]}
        limit = int(rec.query.get("limit", ["20"])[0])
        after = rec.query.get("after_id", [None])[0]
        start = self.models.index(after) + 1 if after in self.models else (0 if after is None else len(self.models))
        page = self.models[start:start + limit]
        return {"data": [{"type": "model", "id": m, "display_name": m, "created_at": "2025-09-29T00:00:00Z"}
                         for m in page],
                "has_more": start + len(page) < len(self.models),
                "first_id": page[0] if page else None, "last_id": page[-1] if page else None}

    @staticmethod
    def _send_whole(h: BaseHTTPRequestHandler, status: int, headers: dict[str, str], payload: bytes) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("content-length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)
        h.wfile.flush()

    @staticmethod
    def _send_stream(h: BaseHTTPRequestHandler, events: list[bytes], ctype: str, reply: Reply, err: bytes) -> None:
        h.send_response(200)
        h.send_header("content-type", ctype)
        for k, v in reply.headers.items():
            h.send_header(k, v)
        h.send_header("transfer-encoding", "chunked")
        h.end_headers()

        def chunk(b: bytes) -> None:
            h.wfile.write(f"{len(b):x}\r\n".encode() + b + b"\r\n")
            h.wfile.flush()

        cut = reply.error_after if reply.error_after is not None else reply.disconnect_after
        for ev in events[:cut] if cut is not None else events:
            chunk(ev)
            time.sleep(0.002)
        if reply.error_after is not None:
            chunk(err)
        if reply.disconnect_after is not None:
            # Abrupt close: no terminating zero-length chunk.
            h.close_connection = True
            h.connection.shutdown(2)
            return
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()
