"""Threaded mock upstreams for the SDK tests: OpenAI, Anthropic Messages and Ollama native.

Each `MockUpstream(flavor)` listens on 127.0.0.1:<free port> in a daemon thread and speaks that provider's
wire format exactly (see /work/shared/wire-formats.md sections 1, 2.5-2.7, 4.2-4.5):

- openai:    POST /v1/chat/completions (JSON, or SSE `data:` chunks + usage chunk + `[DONE]`), GET /v1/models,
             POST /v1/responses (a Response object, or SSE `event:` + `data:` frames with `sequence_number`s from 0:
             response.created, response.in_progress, output_item.added, content_part.added, output_text.delta…,
             output_text.done, content_part.done, function_call_arguments.delta/.done, output_item.done, then
             response.completed or response.incomplete with usage, per shared/specs/openai-openapi.yaml),
             GET/DELETE /v1/responses/{id} and POST /v1/responses/{id}/cancel (created responses are kept in
             `stored` unless `store: false`), POST /v1/embeddings (float or base64), POST /v1/completions
- anthropic: POST /v1/messages (JSON, or SSE with `event:` lines, `ping`, final cumulative usage in
             `message_delta` like the recordings in shared/upstream-recordings/anthropic),
             POST /v1/messages/count_tokens (`{"input_tokens": count_tokens}`), GET /v1/models (has_more/after_id)
- ollama:    POST /api/chat (JSON, or NDJSON ending with a `done: true` line), GET /api/tags,
             POST /api/embed (`embeddings` + `prompt_eval_count`)

Model-name fault modes (for batch tests, where replies cannot be scripted per line): a model containing
`-slow` answers after `slow_secs`; `-fail529` answers Anthropic's 529 overloaded (503 on the other
flavors); `-rl429` answers every other call with 429 and `retry-after: 1`. `max_inflight` is the highest
number of chat calls served at once since the last `reset`.

Tests script replies with `enqueue(Reply(...))` (one-shot, FIFO); otherwise `default_answer` is sent (a short
text unless a test sets it; `reset()` restores it).
Every request is recorded in `requests` (method, path, query, headers, json); `paths()` lists what was called.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CHAT_PATH = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages", "ollama": "/api/chat"}
MODELS_PATH = {"openai": "/v1/models", "anthropic": "/v1/models", "ollama": "/api/tags"}
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
RESPONSES_PATH = "/v1/responses"
EMBEDDINGS_PATH = {"openai": "/v1/embeddings", "ollama": "/api/embed"}
COMPLETIONS_PATH = "/v1/completions"
STORED_RESPONSE = re.compile(r"^/v1/responses/(resp_[A-Za-z0-9_]+)(/cancel)?$")


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
    # The generation hit the output-token limit: OpenAI `length` / status `incomplete`, Anthropic
    # `max_tokens`, Ollama `done_reason: length`.
    truncated: bool = False

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
    return "length" if a.truncated else "tool_calls" if a.tool_calls else "stop"


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

# ---------------------------------------------------------------- OpenAI Responses

_ids = itertools.count(1)


def _new_id(prefix: str) -> str:
    return f"{prefix}_mock{next(_ids):06d}"


def responses_usage(a: Answer) -> dict:
    prompt = a.input_tokens + a.cache_read + a.cache_creation
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": a.cache_read,
                                                                   "cache_write_tokens": a.cache_creation},
            "output_tokens": a.output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + a.output_tokens}


def _message_item(item_id: str, text: str, status: str) -> dict:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if status != "in_progress" \
        else []
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def _call_item(item_id: str, c: ToolCall, status: str) -> dict:
    return {"type": "function_call", "id": item_id, "call_id": c.id, "name": c.name,
            "arguments": json.dumps(c.input) if status != "in_progress" else "", "status": status}


def responses_object(req: dict, a: Answer, resp_id: str, item_ids: list[str], status: str) -> dict:
    """A Response object (spec `Response`) echoing the request's settings; `status` `in_progress` has no
    output and no usage (the `response.created` snapshot)."""
    done = status != "in_progress"
    output: list[dict] = []
    if done:
        if a.text:
            output.append(_message_item(item_ids[0], a.full_text, "incomplete" if a.truncated else "completed"))
        output += [_call_item(item_ids[1 + i], c, "completed") for i, c in enumerate(a.tool_calls)]
    text = req.get("text") or {"format": {"type": "text"}}
    return {
        "id": resp_id, "object": "response", "created_at": 1760000000,
        "status": status, "completed_at": 1760000001 if status == "completed" else None,
        "background": bool(req.get("background", False)), "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": req.get("instructions"), "max_output_tokens": req.get("max_output_tokens"),
        "max_tool_calls": req.get("max_tool_calls"), "model": req.get("model", "mock-model"),
        "output": output, "parallel_tool_calls": req.get("parallel_tool_calls", True),
        "previous_response_id": req.get("previous_response_id"),
        "reasoning": {"effort": (req.get("reasoning") or {}).get("effort"), "summary": None},
        "service_tier": "default", "store": req.get("store", True),
        "temperature": req.get("temperature", 1.0), "text": text,
        "tool_choice": req.get("tool_choice", "auto"), "tools": req.get("tools", []),
        "top_logprobs": 0, "top_p": req.get("top_p", 1.0), "truncation": "disabled",
        "metadata": req.get("metadata") or {},
        **({"usage": responses_usage(a)} if done else {}),
    }


def _answer_item_ids(a: Answer) -> list[str]:
    return [_new_id("msg")] + [_new_id("fc") for _ in a.tool_calls]


def responses_events(req: dict, a: Answer, resp_id: str, item_ids: list[str]) -> list[bytes]:
    """The SSE frames of a streamed Response, `event:` + `data:`, `sequence_number` from 0."""
    frames: list[dict] = []
    final_status = "incomplete" if a.truncated else "completed"
    frames.append({"type": "response.created", "response": responses_object(req, a, resp_id, item_ids, "in_progress")})
    frames.append({"type": "response.in_progress",
                   "response": responses_object(req, a, resp_id, item_ids, "in_progress")})
    index = 0
    if a.text:
        mid = item_ids[0]
        frames.append({"type": "response.output_item.added", "output_index": index,
                       "item": _message_item(mid, "", "in_progress")})
        frames.append({"type": "response.content_part.added", "item_id": mid, "output_index": index,
                       "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": [],
                                                    "logprobs": []}})
        for piece in a.text:
            frames.append({"type": "response.output_text.delta", "item_id": mid, "output_index": index,
                           "content_index": 0, "delta": piece, "logprobs": []})
        frames.append({"type": "response.output_text.done", "item_id": mid, "output_index": index,
                       "content_index": 0, "text": a.full_text, "logprobs": []})
        frames.append({"type": "response.content_part.done", "item_id": mid, "output_index": index,
                       "content_index": 0, "part": {"type": "output_text", "text": a.full_text,
                                                    "annotations": [], "logprobs": []}})
        frames.append({"type": "response.output_item.done", "output_index": index,
                       "item": _message_item(mid, a.full_text, "incomplete" if a.truncated else "completed")})
        index += 1
    for i, c in enumerate(a.tool_calls):
        fid = item_ids[1 + i]
        frames.append({"type": "response.output_item.added", "output_index": index,
                       "item": _call_item(fid, c, "in_progress")})
        args = json.dumps(c.input)
        for piece in _fragments(args)[1:]:
            if piece:
                frames.append({"type": "response.function_call_arguments.delta", "item_id": fid,
                               "output_index": index, "delta": piece})
        frames.append({"type": "response.function_call_arguments.done", "item_id": fid, "output_index": index,
                       "name": c.name, "arguments": args})
        frames.append({"type": "response.output_item.done", "output_index": index,
                       "item": _call_item(fid, c, "completed")})
        index += 1
    frames.append({"type": f"response.{final_status}",
                   "response": responses_object(req, a, resp_id, item_ids, final_status)})
    out = []
    for seq, f in enumerate(frames):
        f["sequence_number"] = seq
        out.append(f"event: {f['type']}\ndata: {json.dumps(f)}\n\n".encode())
    return out


RESPONSES_INBAND_ERROR = ("event: error\ndata: " + json.dumps(
    {"type": "error", "code": "server_error", "message": "The server had an error processing your request.",
     "param": None, "sequence_number": 99}) + "\n\n").encode()


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    types = {400: "invalid_request_error", 404: "invalid_request_error", 429: "requests", 500: "server_error"}
    return {"error": {"message": message, "type": types.get(status, "server_error"), "param": param, "code": code}}


# ---------------------------------------------------------------- embeddings (OpenAI and Ollama)


def embedding_vector(text: str, dims: int) -> list[float]:
    """A deterministic vector whose components are exact in float32 (multiples of 1/16), so a base64
    round trip must give back exactly these numbers."""
    seed = sum(map(ord, text))
    return [((seed + 5 * j) % 16) / 16 - 0.5 for j in range(dims)]


EMBEDDING_DIMS = 8
EMBEDDING_TOKENS_PER_INPUT = 3


def _embedding_inputs(raw: Any) -> list[str]:
    return [raw] if isinstance(raw, str) else [str(x) for x in raw]


def openai_embeddings(req: dict) -> dict:
    inputs = _embedding_inputs(req["input"])
    dims = int(req.get("dimensions") or EMBEDDING_DIMS)
    data = []
    for i, text in enumerate(inputs):
        vec = embedding_vector(text, dims)
        emb: Any = vec
        if req.get("encoding_format") == "base64":
            emb = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    tokens = EMBEDDING_TOKENS_PER_INPUT * len(inputs)
    return {"object": "list", "data": data, "model": req.get("model"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def ollama_embed(req: dict) -> dict:
    inputs = _embedding_inputs(req["input"])
    dims = int(req.get("dimensions") or EMBEDDING_DIMS)
    return {"model": req.get("model"), "embeddings": [embedding_vector(t, dims) for t in inputs],
            "total_duration": 14143917, "load_duration": 1019500,
            "prompt_eval_count": EMBEDDING_TOKENS_PER_INPUT * len(inputs)}


# ---------------------------------------------------------------- OpenAI legacy completions


def openai_text_completion(model: str, a: Answer) -> dict:
    return {"id": "cmpl-mock01", "object": "text_completion", "created": 1760000000, "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [{"text": a.full_text, "index": 0, "logprobs": None,
                         "finish_reason": "length" if a.truncated else "stop"}],
            "usage": {"prompt_tokens": a.input_tokens, "completion_tokens": a.output_tokens,
                      "total_tokens": a.input_tokens + a.output_tokens}}


def openai_text_completion_events(model: str, a: Answer, include_usage: bool) -> list[bytes]:
    def chunk(text: str, finish: str | None) -> dict:
        return {"id": "cmpl-mock01", "object": "text_completion", "created": 1760000000, "model": model,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]}
    chunks = [chunk(p, None) for p in a.text] + [chunk("", "length" if a.truncated else "stop")]
    if include_usage:
        last = openai_text_completion(model, a)
        chunks.append({**chunk("", None), "choices": [], "usage": last["usage"]})
    return [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]


# ---------------------------------------------------------------- Anthropic


def anthropic_stop(a: Answer) -> str:
    return "max_tokens" if a.truncated else "tool_use" if a.tool_calls else "end_turn"



def anthropic_message(model: str, a: Answer, output_tokens: int | None = None) -> dict:
    content: list[dict] = []
    if a.text:
        content.append({"type": "text", "text": a.full_text})
    content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.input} for c in a.tool_calls]
    return {"id": "msg_01MockXFDUDYJgAACzvnptvV", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": anthropic_stop(a), "stop_sequence": None,
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
                                    "delta": {"stop_reason": anthropic_stop(a),
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
    return {"done": True, "done_reason": "length" if a.truncated else "stop", "total_duration": 3244883583, "load_duration": 2969184542,
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
        self.stored: dict[str, dict] = {}  # OpenAI Responses kept for GET/DELETE /v1/responses/{id}
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

            def do_DELETE(self) -> None:
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
            self.stored.clear()
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
        if self._handle_extra(h, url.path, body, reply):
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

    def _handle_extra(self, h: BaseHTTPRequestHandler, path: str, body: Any, reply: Reply) -> bool:
        """The Responses, embeddings and legacy completions endpoints; False when `path` is none of them."""
        json_headers = {"content-type": "application/json", **reply.headers}
        req = body or {}
        a = reply.answer
        if self.flavor == "openai" and path == RESPONSES_PATH and h.command == "POST":
            resp_id, item_ids = _new_id("resp"), _answer_item_ids(a)
            final = responses_object(req, a, resp_id, item_ids, "incomplete" if a.truncated else "completed")
            if req.get("store", True):
                with self.lock:
                    self.stored[resp_id] = final
            if req.get("stream"):
                self._send_stream(h, responses_events(req, a, resp_id, item_ids), "text/event-stream", reply,
                                  RESPONSES_INBAND_ERROR)
            else:
                self._send_whole(h, 200, json_headers, json.dumps(final).encode())
            return True
        m = STORED_RESPONSE.match(path)
        if self.flavor == "openai" and m:
            resp_id, cancel = m.group(1), m.group(2)
            with self.lock:
                stored = self.stored.get(resp_id)
                if stored is not None and h.command == "DELETE" and not cancel:
                    del self.stored[resp_id]
            if stored is None:
                self._send_whole(h, 404, json_headers, json.dumps(openai_error(
                    404, f"Response with id '{resp_id}' not found.")).encode())
            elif h.command == "DELETE" and not cancel:
                self._send_whole(h, 200, json_headers, json.dumps(
                    {"id": resp_id, "object": "response.deleted", "deleted": True}).encode())
            elif cancel and h.command == "POST":
                self._send_whole(h, 200, json_headers, json.dumps({**stored, "status": "cancelled"}).encode())
            elif h.command == "GET":
                self._send_whole(h, 200, json_headers, json.dumps(stored).encode())
            else:
                return False
            return True
        if path == EMBEDDINGS_PATH.get(self.flavor) and h.command == "POST":
            out = openai_embeddings(req) if self.flavor == "openai" else ollama_embed(req)
            self._send_whole(h, 200, json_headers, json.dumps(out).encode())
            return True
        if self.flavor == "openai" and path == COMPLETIONS_PATH and h.command == "POST":
            model = req.get("model", "mock-model")
            if req.get("stream"):
                include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
                self._send_stream(h, openai_text_completion_events(model, a, include_usage), "text/event-stream",
                                  reply, OPENAI_INBAND_ERROR)
            else:
                self._send_whole(h, 200, json_headers, json.dumps(openai_text_completion(model, a)).encode())
            return True
        return False

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
