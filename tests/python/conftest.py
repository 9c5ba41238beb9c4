"""Fixtures: mock upstreams, the gateway binary started on a free port, and an OpenAI SDK client whose every
HTTP exchange is recorded and validated against the OpenAPI schemas after each test."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Iterator

import httpx
import openai
import pytest

import openapi_schemas
from mock_upstream import MockUpstream

REPO = pathlib.Path(__file__).resolve().parents[2]
UPSTREAM_OPENAI_KEY = "sk-upstream-openai-test"
UPSTREAM_ANTHROPIC_KEY = "sk-ant-upstream-test"
# Tenants of `tenant_gateway`: each test module meters under its own tenant, so `GET /v1/usage` with that
# key sees only its own ledger records.
TENANT_KEYS = {"acme": "sk-acme-e2e", "ledger": "sk-ledger-e2e", "claude": "sk-claude-e2e",
               "responses": "sk-responses-e2e", "agents": "sk-agents-e2e", "codex": "sk-codex-e2e"}


def gateway_binary() -> pathlib.Path:
    env = os.environ.get("GATEWAY_BIN")
    if env:
        return pathlib.Path(env)
    for profile in ("release", "debug"):
        p = REPO / "target" / profile / "ai-aggregator"
        if p.exists():
            return p
    raise RuntimeError("gateway binary not found: build it (scripts/test does) or set GATEWAY_BIN")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Gateway:
    url: str
    proc: subprocess.Popen
    log: pathlib.Path


@pytest.fixture(scope="session")
def mocks() -> Iterator[dict[str, MockUpstream]]:
    ms = {f: MockUpstream(f) for f in ("openai", "anthropic", "ollama")}
    yield ms
    for m in ms.values():
        m.close()


def providers_yaml(mocks: dict[str, MockUpstream]) -> str:
    """The `providers:` section pointing the gateway at the three mocks (shared by every harness)."""
    return f"""providers:
  openai:
    kind: openai
    base_url: {mocks['openai'].base_url}
    api_key: {UPSTREAM_OPENAI_KEY}
  anthropic:
    kind: anthropic
    base_url: {mocks['anthropic'].base_url}
    api_key: {UPSTREAM_ANTHROPIC_KEY}
    anthropic_version: "2023-06-01"
  ollama:
    kind: ollama
    base_url: {mocks['ollama'].base_url}
    num_ctx: 8192
"""


def start_gateway(mocks: dict[str, MockUpstream], tmp: pathlib.Path, extra_config: str = "") -> Gateway:
    """Starts the gateway binary on a free port in front of the mocks; `extra_config` is appended YAML
    (tenants, routes, ...)."""
    port = free_port()
    config = f"""
listen: 127.0.0.1:{port}
models_cache_ttl_secs: 0
ledger:
  data_dir: {tmp / 'data'}
""" + providers_yaml(mocks) + extra_config
    cfg = tmp / "gateway.yaml"
    cfg.write_text(config)
    log = tmp / "gateway.log"
    env = {k: v for k, v in os.environ.items()
           if k not in ("API_PORT", "DATABASE_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OLLAMA_URL")}
    env.setdefault("RUST_LOG", "info")
    with log.open("wb") as out:
        proc = subprocess.Popen([str(gateway_binary()), "--config", str(cfg)], stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=tmp)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            urllib.request.urlopen(url + "/v1/models", timeout=2).read()
            break
        except urllib.error.HTTPError:
            break  # it answers HTTP: up
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"gateway did not answer within 30 s:\n{log.read_text()[-4000:]}")
            time.sleep(0.1)
    return Gateway(url, proc, log)


def stop_gateway(gw: Gateway) -> None:
    gw.proc.terminate()
    try:
        gw.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        gw.proc.kill()
        raise


@pytest.fixture(scope="session")
def gateway(mocks: dict[str, MockUpstream], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(mocks, tmp_path_factory.mktemp("gateway"))
    yield gw
    stop_gateway(gw)


@pytest.fixture(scope="session")
def tenant_gateway(mocks: dict[str, MockUpstream], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway with tenants (so keys are checked and usage is per tenant), for the Anthropic SDK and
    Claude Code tests. Bare `claude-*` names (Claude Code's Haiku-class background calls included) reach
    the Anthropic mock through the built-in route."""
    tenants = "tenants:\n" + "".join(f"  - id: {t}\n    api_keys: [\"{k}\"]\n" for t, k in TENANT_KEYS.items())
    gw = start_gateway(mocks, tmp_path_factory.mktemp("tenant-gateway"), tenants)
    yield gw
    stop_gateway(gw)


@dataclass
class Exchange:
    method: str
    url: str
    status: int
    content_type: str
    body: bytearray = field(default_factory=bytearray)
    headers: dict[str, str] = field(default_factory=dict)


class _Tee(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, ex: Exchange):
        self.inner, self.ex = inner, ex

    def __iter__(self) -> Iterator[bytes]:
        for part in self.inner:
            self.ex.body.extend(part)
            yield part

    def close(self) -> None:
        self.inner.close()


class RecordingTransport(httpx.BaseTransport):
    """Passes requests to a real transport and keeps a copy of every response body the SDK reads."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.exchanges: list[Exchange] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        resp = self.inner.handle_request(request)
        ex = Exchange(request.method, str(request.url), resp.status_code, resp.headers.get("content-type", ""),
                      headers={k.lower(): v for k, v in resp.headers.items()})
        self.exchanges.append(ex)
        return httpx.Response(resp.status_code, headers=resp.headers, stream=_Tee(resp.stream, ex),
                              extensions=resp.extensions, request=request)

    def close(self) -> None:
        self.inner.close()


def sse_payloads(body: bytes) -> list[str]:
    """`data:` payloads of an SSE body, split on blank lines like openai-python does."""
    text = body.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    out = []
    for block in text.split("\n\n"):
        data = [line[5:].removeprefix(" ") for line in block.split("\n") if line.startswith("data:")]
        if data:
            out.append("\n".join(data))
    return out


def _is_responses(path: str) -> bool:
    return path.endswith("/v1/responses") or "/v1/responses/" in path


def _is_legacy_completions(path: str) -> bool:
    return path.endswith("/completions") and not path.endswith("/chat/completions")


def validate_exchange(ex: Exchange) -> int:
    """Validates one recorded body against the OpenAPI schemas; returns how many documents were checked."""
    path = httpx.URL(ex.url).path
    if not ex.body:
        return 0
    if ex.content_type.startswith("text/event-stream"):
        n = 0
        for data in sse_payloads(bytes(ex.body)):
            if data == "[DONE]":
                continue
            doc = json.loads(data)
            if _is_responses(path):
                openapi_schemas.response_event(doc)  # `error` events included (ResponseErrorEvent)
            elif "error" in doc:
                openapi_schemas.error(doc)
            elif _is_legacy_completions(path):
                openapi_schemas.text_completion_chunk(doc)
            else:
                openapi_schemas.chunk(doc)
            n += 1
        return n
    doc = json.loads(bytes(ex.body))
    if ex.status >= 400:
        openapi_schemas.error(doc)
    elif path.endswith("/chat/completions"):
        openapi_schemas.completion(doc)
    elif _is_responses(path) and ex.method == "DELETE":
        assert doc.get("deleted") is True and doc.get("object") == "response.deleted", doc
    elif _is_responses(path):
        openapi_schemas.response(doc)
    elif path.endswith("/embeddings"):
        openapi_schemas.embeddings(doc)
    elif _is_legacy_completions(path):
        openapi_schemas.text_completion(doc)
    elif path.rstrip("/").endswith("/v1/models"):
        openapi_schemas.model_list(doc)
    elif "/v1/models/" in path:
        openapi_schemas.model(doc)
    else:
        raise AssertionError(f"no schema for {ex.method} {path}")
    return 1


class _AsyncTee(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, ex: Exchange):
        self.inner, self.ex = inner, ex

    async def __aiter__(self):  # type: ignore[override]
        async for part in self.inner:
            self.ex.body.extend(part)
            yield part

    async def aclose(self) -> None:
        await self.inner.aclose()


class AsyncRecordingTransport(httpx.AsyncBaseTransport):
    """The async twin of RecordingTransport (for `AsyncOpenAI`, which the Agents SDK uses)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.exchanges: list[Exchange] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        resp = await self.inner.handle_async_request(request)
        ex = Exchange(request.method, str(request.url), resp.status_code, resp.headers.get("content-type", ""),
                      headers={k.lower(): v for k, v in resp.headers.items()})
        self.exchanges.append(ex)
        return httpx.Response(resp.status_code, headers=resp.headers, stream=_AsyncTee(resp.stream, ex),
                              extensions=resp.extensions, request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
def recorder() -> RecordingTransport:
    return RecordingTransport()


@pytest.fixture
def client(gateway: Gateway, mocks: dict[str, MockUpstream], recorder: RecordingTransport) -> Iterator[openai.OpenAI]:
    for m in mocks.values():
        m.reset()
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-client-test", max_retries=0, timeout=20,
                      http_client=httpx.Client(transport=recorder))
    yield c
    c.close()
    checked = sum(validate_exchange(ex) for ex in recorder.exchanges)
    assert recorder.exchanges, "the test made no HTTP exchange"
    assert checked > 0 or all(not ex.body for ex in recorder.exchanges)
