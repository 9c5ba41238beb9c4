"""End-to-end tests with the official `anthropic` Python SDK (PyPI) against the gateway's Anthropic Messages
door (issue #12), for each backend: Anthropic (pass-through), OpenAI-kind and Ollama (translated).

The `aclient` fixture records every HTTP exchange the SDK makes and checks, after each test, the contract
the SDK relies on: every SSE frame named by an `event:` line equal to its `data.type`, `message_start`
first and `message_stop` last, contiguous block indices, deltas matching their block, and errors in
Anthropic's envelope with a `request-id` header.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, Iterator

import anthropic
import httpx
import pytest

from conftest import TENANT_KEYS, Exchange, Gateway, RecordingTransport, sse_payloads
from mock_upstream import Answer, MockUpstream, Recorded, Reply, ToolCall

MODELS = {
    "anthropic": "anthropic/claude-sonnet-4-5",
    "openai": "openai/gpt-4o-mini",
    "ollama": "ollama/llama3.2",
}
UPSTREAM_MODEL = {"anthropic": "claude-sonnet-4-5", "openai": "gpt-4o-mini", "ollama": "llama3.2"}
PROVIDERS = list(MODELS)
MESSAGES = [{"role": "user", "content": "Say hello"}]
TOOLS = [{"name": "get_weather", "description": "Current weather for a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
# Upstream tool-call ids as each provider spells them (all already match Anthropic's ^[a-zA-Z0-9_-]+$).
CALL_ID = {"anthropic": "toolu_01A09q90qw90lq917835lq9", "openai": "call_a1B2c3", "ollama": "call_k3j9x2ab"}
# A 1x1 transparent PNG.
PNG_B64 = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")).decode()


def _check_anthropic_sse(ex: Exchange) -> int:
    """The stream contract of Anthropic's SDKs (see the module docstring); returns the frame count."""
    text = bytes(ex.body).decode().replace("\r\n", "\n")
    frames = []
    for block in text.split("\n\n"):
        lines = [ln for ln in block.split("\n") if ln and not ln.startswith(":")]
        if not lines:
            continue
        events = [ln[6:].strip() for ln in lines if ln.startswith("event:")]
        data = "\n".join(ln[5:].removeprefix(" ") for ln in lines if ln.startswith("data:"))
        assert len(events) == 1, f"every frame has exactly one `event:` line: {block!r}"
        doc = json.loads(data)
        assert doc["type"] == events[0], f"event name matches data.type: {block!r}"
        frames.append(doc)
    names = [f["type"] for f in frames if f["type"] != "ping"]
    if "error" in names:
        assert names[-1] == "error", names
        return len(frames)
    assert names[0] == "message_start" and names[-1] == "message_stop", names
    assert names[-2] == "message_delta", names
    open_block: tuple[int, str] | None = None
    next_index = 0
    for f in frames:
        if f["type"] == "content_block_start":
            assert open_block is None, "one block at a time"
            assert f["index"] == next_index, f"contiguous indices: {f}"
            open_block, next_index = (f["index"], f["content_block"]["type"]), next_index + 1
            if open_block[1] == "tool_use":
                assert f["content_block"]["input"] == {}, f
        elif f["type"] == "content_block_delta":
            assert open_block is not None and f["index"] == open_block[0], f
            assert (open_block[1], f["delta"]["type"]) in {("text", "text_delta"), ("tool_use", "input_json_delta"),
                                                           ("thinking", "thinking_delta"),
                                                           ("thinking", "signature_delta")}, f
        elif f["type"] == "content_block_stop":
            assert open_block is not None and f["index"] == open_block[0], f
            open_block = None
        elif f["type"] == "message_delta":
            assert open_block is None
            usage = f["usage"]
            assert isinstance(usage["output_tokens"], int)
            assert isinstance(usage.get("input_tokens"), int) and usage["input_tokens"] > 0, \
                f"final input_tokens in message_delta (Claude Code's context meter): {f}"
    return len(frames)


def check_exchange(ex: Exchange) -> int:
    path = httpx.URL(ex.url).path
    if not ex.body:
        return 0
    if ex.content_type.startswith("text/event-stream"):
        return _check_anthropic_sse(ex)
    doc = json.loads(bytes(ex.body))
    if ex.status >= 400:
        assert doc["type"] == "error" and isinstance(doc["error"]["type"], str) and doc["error"]["message"], doc
        assert ex.headers.get("request-id"), f"request-id header on {ex.status} {path}"
    elif path.endswith("/v1/messages"):
        assert doc["type"] == "message" and doc["id"].startswith("msg_"), doc
        assert set(doc["usage"]) >= {"input_tokens", "output_tokens", "cache_creation_input_tokens",
                                     "cache_read_input_tokens"}, f"all four usage counts: {doc['usage']}"
        for key in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            assert isinstance(doc["usage"][key], int), doc["usage"]
    return 1


def make_client(gw: Gateway, recorder: RecordingTransport, key: str, **kw: Any) -> anthropic.Anthropic:
    kw.setdefault("max_retries", 0)
    return anthropic.Anthropic(base_url=gw.url, api_key=key, timeout=20, http_client=httpx.Client(transport=recorder),
                               **kw)


@pytest.fixture
def aclient(tenant_gateway: Gateway, mocks: dict[str, MockUpstream],
            recorder: RecordingTransport) -> Iterator[anthropic.Anthropic]:
    for m in mocks.values():
        m.reset()
    c = make_client(tenant_gateway, recorder, TENANT_KEYS["acme"])
    yield c
    c.close()
    assert recorder.exchanges, "the test made no HTTP exchange"
    checked = sum(check_exchange(ex) for ex in recorder.exchanges)
    assert checked > 0 or all(not ex.body for ex in recorder.exchanges)


def one_chat_request(mock: MockUpstream) -> Recorded:
    reqs = mock.chat_requests()
    assert len(reqs) == 1, f"expected one upstream chat request, got {[r.path for r in mock.requests]}"
    return reqs[0]


def user_text(msg: dict) -> str:
    c = msg["content"]
    return c if isinstance(c, str) else "".join(p.get("text", "") for p in c if p.get("type") == "text")


# ---------------------------------------------------------------- messages.create / messages.stream


@pytest.mark.parametrize("provider", PROVIDERS)
def test_create_text(aclient: anthropic.Anthropic, mocks: dict[str, MockUpstream], provider: str) -> None:
    r = aclient.messages.create(model=MODELS[provider], max_tokens=256, messages=MESSAGES)
    assert r.type == "message" and r.role == "assistant"
    assert [b.type for b in r.content] == ["text"]
    assert r.content[0].text == "Hello there!"
    assert r.stop_reason == "end_turn"
    assert r.usage.input_tokens == 11 and r.usage.output_tokens == 6
    assert r.usage.cache_read_input_tokens == 0 and r.usage.cache_creation_input_tokens == 0
    sent = one_chat_request(mocks[provider])
    assert sent.json["model"] == UPSTREAM_MODEL[provider]
    assert "sk-acme-e2e" not in json.dumps(sent.headers), "the tenant key is never forwarded"
    if provider == "anthropic":
        assert sent.json["messages"] == MESSAGES, "pass-through: body untouched but the model"
        assert sent.json["max_tokens"] == 256
        assert sent.headers.get("x-api-key") == "sk-ant-upstream-test"
        assert sent.headers.get("anthropic-version") == "2023-06-01"
        assert "authorization" not in sent.headers
    elif provider == "openai":
        assert [(m["role"], user_text(m)) for m in sent.json["messages"]] == [("user", "Say hello")]
        assert sent.json.get("max_tokens", sent.json.get("max_completion_tokens")) == 256
        assert sent.headers.get("authorization") == "Bearer sk-upstream-openai-test"
    else:
        assert sent.json["stream"] is False
        assert [(m["role"], m["content"]) for m in sent.json["messages"]] == [("user", "Say hello")]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_create_system_and_stop_sequences(aclient: anthropic.Anthropic, mocks: dict[str, MockUpstream],
                                          provider: str) -> None:
    r = aclient.messages.create(model=MODELS[provider], max_tokens=64, messages=MESSAGES,
                                system=[{"type": "text", "text": "You are terse."}], stop_sequences=["\n\nHuman:"],
                                temperature=0.2)
    assert r.content[0].text == "Hello there!"
    sent = one_chat_request(mocks[provider]).json
    if provider == "anthropic":
        assert sent["system"] == [{"type": "text", "text": "You are terse."}]
        assert sent["stop_sequences"] == ["\n\nHuman:"]
    elif provider == "openai":
        assert sent["messages"][0]["role"] in ("system", "developer")
        assert user_text(sent["messages"][0]) == "You are terse."
        assert sent["stop"] in (["\n\nHuman:"], "\n\nHuman:")
    else:
        assert sent["messages"][0] == {"role": "system", "content": "You are terse."}
        assert sent["options"]["stop"] == ["\n\nHuman:"]
        assert sent["options"]["temperature"] == 0.2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_text(aclient: anthropic.Anthropic, mocks: dict[str, MockUpstream], provider: str) -> None:
    mocks[provider].enqueue(Reply(answer=Answer(text=["Hel", "lo", " there", "!"])))
    with aclient.messages.stream(model=MODELS[provider], max_tokens=256, messages=MESSAGES) as s:
        deltas = list(s.text_stream)
        final = s.get_final_message()
    assert len(deltas) >= 2, f"the text arrives in several deltas: {deltas}"
    assert "".join(deltas) == "Hello there!"
    assert [b.type for b in final.content] == ["text"]
    assert final.content[0].text == "Hello there!"
    assert final.stop_reason == "end_turn"
    assert final.id.startswith("msg_")
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 6)
    sent = one_chat_request(mocks[provider]).json
    assert sent["stream"] is True
    if provider == "openai":
        assert sent["stream_options"]["include_usage"] is True, "the gateway asks the upstream for usage"


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_cache_usage_semantics(aclient: anthropic.Anthropic, mocks: dict[str, MockUpstream], provider: str) -> None:
    """Anthropic's `input_tokens` excludes cached tokens; from OpenAI, input = prompt - cached."""
    a = (Answer(input_tokens=412, output_tokens=89, cache_read=2048, cache_creation=100) if provider == "anthropic"
         else Answer(input_tokens=300, output_tokens=89, cache_read=1024))
    mocks[provider].enqueue(Reply(answer=a))
    mocks[provider].enqueue(Reply(answer=a))
    r = aclient.messages.create(model=MODELS[provider], max_tokens=256, messages=MESSAGES)
    with aclient.messages.stream(model=MODELS[provider], max_tokens=256, messages=MESSAGES) as s:
        final = s.get_final_message()
    for u in (r.usage, final.usage):
        assert u.input_tokens == a.input_tokens
        assert u.cache_read_input_tokens == a.cache_read
        assert u.output_tokens == 89
        if provider == "anthropic":
            assert u.cache_creation_input_tokens == 100


# ---------------------------------------------------------------- tools and images


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_tool_use_round_trip(aclient: anthropic.Anthropic, mocks: dict[str, MockUpstream], provider: str,
                             stream: bool) -> None:
    mock = mocks[provider]
    mock.enqueue(Reply(answer=Answer(text=["Let me check."],
                                     tool_calls=[ToolCall(CALL_ID[provider], "get_weather", {"city": "Paris"})])))
    kw: dict[str, Any] = dict(model=MODELS[provider], max_tokens=256, messages=MESSAGES, tools=TOOLS,
                              tool_choice={"type": "auto"})
    if stream:
        with aclient.messages.stream(**kw) as s:
            r = s.get_final_message()
    else:
        r = aclient.messages.create(**kw)
    assert r.stop_reason == "tool_use"
    assert [b.type for b in r.content] == ["text", "tool_use"]
    assert r.content[0].text == "Let me check."
    tool = r.content[1]
    assert tool.name == "get_weather"
    assert tool.input == {"city": "Paris"}, "parsed input"
    assert tool.id == CALL_ID[provider], "valid upstream ids are kept verbatim"

    first = mock.chat_requests()[0].json
    if provider == "anthropic":
        assert first["tools"] == TOOLS and first["tool_choice"] == {"type": "auto"}
    elif provider == "openai":
        assert first["tools"][0]["function"]["name"] == "get_weather"
        assert first["tools"][0]["function"]["parameters"] == TOOLS[0]["input_schema"]
        assert first["tool_choice"] == "auto"
    else:
        assert first["tools"][0]["function"]["name"] == "get_weather"
        assert first["tools"][0]["function"]["parameters"] == TOOLS[0]["input_schema"]

    # Second turn: the SDK's own content blocks go back as the assistant turn, then a tool_result.
    r2 = aclient.messages.create(model=MODELS[provider], max_tokens=256, tools=TOOLS, messages=[
        *MESSAGES,
        {"role": "assistant", "content": r.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool.id, "content": "18°C and sunny"}]},
    ])
    assert r2.content[0].text == "Hello there!" and r2.stop_reason == "end_turn"
    reqs = mock.chat_requests()
    assert len(reqs) == 2
    msgs = reqs[1].json["messages"]
    if provider == "anthropic":
        assert msgs[1]["content"][1] == {"type": "tool_use", "id": CALL_ID[provider], "name": "get_weather",
                                         "input": {"city": "Paris"}}
        assert msgs[2]["content"] == [{"type": "tool_result", "tool_use_id": CALL_ID[provider],
                                       "content": "18°C and sunny"}]
    elif provider == "openai":
        assistant = next(m for m in msgs if m["role"] == "assistant")
        assert [c["id"] for c in assistant["tool_calls"]] == [CALL_ID[provider]]
        assert assistant["tool_calls"][0]["function"]["name"] == "get_weather"
        assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
        tool_msg = next(m for m in msgs if m["role"] == "tool")
        assert tool_msg["tool_call_id"] == CALL_ID[provider]
        assert user_text(tool_msg) == "18°C and sunny"
    else:
        assistant = next(m for m in msgs if m["role"] == "assistant")
        assert assistant["tool_calls"][0]["function"]["name"] == "get_weather"
        assert assistant["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
        tool_msg = next(m for m in msgs if m["role"] == "tool")
        assert tool_msg["content"] == "18°C and sunny"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_image_block(aclient: anthropic.Anthropic, mocks: dict[str, MockUpstream], provider: str) -> None:
    r = aclient.messages.create(model=MODELS[provider], max_tokens=64, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
        {"type": "text", "text": "What is in this image?"},
    ]}])
    assert r.content[0].text == "Hello there!"
    msg = one_chat_request(mocks[provider]).json["messages"][-1]
    if provider == "anthropic":
        assert msg["content"][0]["source"]["data"] == PNG_B64
    elif provider == "openai":
        parts = msg["content"]
        image = next(p for p in parts if p["type"] == "image_url")
        assert image["image_url"]["url"] == f"data:image/png;base64,{PNG_B64}"
        assert any(p.get("text") == "What is in this image?" for p in parts)
    else:
        assert msg["images"] == [PNG_B64]
        assert msg["content"] == "What is in this image?"


# ---------------------------------------------------------------- count_tokens and models


def test_count_tokens_anthropic_is_forwarded(aclient: anthropic.Anthropic, mocks: dict[str, MockUpstream]) -> None:
    mocks["anthropic"].count_tokens = 4321
    r = aclient.messages.count_tokens(model=MODELS["anthropic"], messages=MESSAGES, system="Be terse.", tools=TOOLS)
    assert r.input_tokens == 4321
    [sent] = mocks["anthropic"].requests_to("/v1/messages/count_tokens")
    assert sent.json["model"] == "claude-sonnet-4-5"
    assert sent.json["messages"] == MESSAGES and sent.json["tools"] == TOOLS and sent.json["system"] == "Be terse."
    assert sent.headers.get("x-api-key") == "sk-ant-upstream-test"
    assert mocks["anthropic"].chat_requests() == []


@pytest.mark.parametrize("provider", ["openai", "ollama"])
def test_count_tokens_translated_is_an_honest_estimate(aclient: anthropic.Anthropic, mocks: dict[str, MockUpstream],
                                                       provider: str) -> None:
    bare = aclient.messages.count_tokens(model=MODELS[provider], messages=MESSAGES).input_tokens
    long_text = "The quick brown fox jumps over the lazy dog. " * 50
    longer = aclient.messages.count_tokens(model=MODELS[provider],
                                           messages=[{"role": "user", "content": long_text}]).input_tokens
    with_tools = aclient.messages.count_tokens(model=MODELS[provider], messages=MESSAGES, tools=TOOLS,
                                               system="You are a weather bot.").input_tokens
    assert bare > 0, "never a fake 0"
    assert longer > bare + 100, (bare, longer)
    assert with_tools > bare, f"system and tools are counted: {bare} vs {with_tools}"
    assert mocks[provider].chat_requests() == [], "no generation is spent on a count"


def test_models_list_anthropic_shape_and_pagination(aclient: anthropic.Anthropic, recorder: RecordingTransport) -> None:
    page = aclient.models.list(limit=2)
    assert len(page.data) == 2
    assert page.has_more is True
    assert page.first_id == page.data[0].id and page.last_id == page.data[1].id
    everything = list(aclient.models.list(limit=2))  # the SDK follows after_id across pages
    ids = [m.id for m in everything]
    assert len(ids) == len(set(ids)), f"no model twice across pages: {ids}"
    assert ids[:2] == [m.id for m in page.data]
    for expected in ("anthropic/claude-sonnet-4-5-20250929", "openai/gpt-4o-mini", "ollama/llama3.2:latest"):
        assert expected in ids, f"{expected} not in {ids}"
    for m in everything:
        assert m.type == "model" and m.display_name and m.created_at.year >= 2000
    paged = [ex for ex in recorder.exchanges if "/v1/models" in ex.url]
    assert len(paged) >= 3 and any("after_id=" in ex.url for ex in paged)


# ---------------------------------------------------------------- errors as the SDK's typed exceptions


def test_unknown_model_is_not_found_error(aclient: anthropic.Anthropic, mocks: dict[str, MockUpstream]) -> None:
    with pytest.raises(anthropic.NotFoundError) as e:
        aclient.messages.create(model="no-such-model-xyz", max_tokens=16, messages=MESSAGES)
    assert e.value.status_code == 404
    assert e.value.body["error"]["type"] == "not_found_error"
    assert e.value.request_id, "request-id header"
    assert all(m.chat_requests() == [] for m in mocks.values())


RATE_LIMIT_BODY = {
    "anthropic": {"type": "error", "error": {"type": "rate_limit_error", "message": "Number of requests exceeded"}},
    "openai": {"error": {"message": "Rate limit reached", "type": "requests", "param": None,
                         "code": "rate_limit_exceeded"}},
    "ollama": {"error": "too many requests"},
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_upstream_429_is_rate_limit_error(aclient: anthropic.Anthropic, mocks: dict[str, MockUpstream],
                                          provider: str, stream: bool) -> None:
    mocks[provider].enqueue(Reply(status=429, body=RATE_LIMIT_BODY[provider], headers={"retry-after": "17"}))
    with pytest.raises(anthropic.RateLimitError) as e:
        if stream:
            with aclient.messages.stream(model=MODELS[provider], max_tokens=16, messages=MESSAGES) as s:
                s.get_final_message()
        else:
            aclient.messages.create(model=MODELS[provider], max_tokens=16, messages=MESSAGES)
    assert e.value.status_code == 429
    assert e.value.body["error"]["type"] == "rate_limit_error"
    assert e.value.response.headers.get("retry-after") == "17"
    if provider == "anthropic":
        assert e.value.body["error"]["message"] == "Number of requests exceeded", "upstream wording preserved"
    assert len(mocks[provider].chat_requests()) == 1, "max_retries=0: one upstream call"


def test_wrong_key_is_authentication_error(tenant_gateway: Gateway, recorder: RecordingTransport,
                                           mocks: dict[str, MockUpstream]) -> None:
    for m in mocks.values():
        m.reset()
    with make_client(tenant_gateway, recorder, "sk-wrong") as c:
        with pytest.raises(anthropic.AuthenticationError) as e:
            c.messages.create(model=MODELS["anthropic"], max_tokens=16, messages=MESSAGES)
    assert e.value.status_code == 401
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "authentication_error"
    assert mocks["anthropic"].chat_requests() == []
    for ex in recorder.exchanges:
        check_exchange(ex)


def test_bearer_auth_token_is_accepted(tenant_gateway: Gateway, recorder: RecordingTransport,
                                       mocks: dict[str, MockUpstream]) -> None:
    """`auth_token=` (ANTHROPIC_AUTH_TOKEN, what Claude Code uses) sends `Authorization: Bearer`."""
    for m in mocks.values():
        m.reset()
    with anthropic.Anthropic(base_url=tenant_gateway.url, api_key=None, auth_token=TENANT_KEYS["acme"], max_retries=0,
                             timeout=20, http_client=httpx.Client(transport=recorder)) as c:
        r = c.messages.create(model=MODELS["anthropic"], max_tokens=16, messages=MESSAGES)
    assert r.content[0].text == "Hello there!"
    sent = one_chat_request(mocks["anthropic"])
    assert sent.headers.get("x-api-key") == "sk-ant-upstream-test"
    assert "authorization" not in sent.headers, "the client's bearer token is not forwarded"


OVERLOADED = {
    "anthropic": (529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    "openai": (503, {"error": {"message": "The engine is currently overloaded, please try again later",
                               "type": "server_error", "param": None, "code": None}}),
    "ollama": (503, {"error": "server busy, please try again.  maximum pending requests exceeded"}),
}


# The gateway's default retry policy: two attempts for an overload before any byte (issue 11, item 14).
GATEWAY_OVERLOAD_ATTEMPTS = 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_overloaded_upstream_is_overloaded_error(aclient: anthropic.Anthropic, mocks: dict[str, MockUpstream],
                                                 provider: str) -> None:
    status, body = OVERLOADED[provider]
    # The gateway itself retries an overload once by default (issue 11, item 14): both attempts see it.
    for _ in range(GATEWAY_OVERLOAD_ATTEMPTS):
        mocks[provider].enqueue(Reply(status=status, body=body))
    # The SDK maps 529 to its own OverloadedError (an APIStatusError, not an InternalServerError).
    with pytest.raises(anthropic.OverloadedError) as e:
        aclient.messages.create(model=MODELS[provider], max_tokens=16, messages=MESSAGES)
    assert e.value.status_code == 529
    assert e.value.body["error"]["type"] == "overloaded_error"
    assert len(mocks[provider].chat_requests()) == GATEWAY_OVERLOAD_ATTEMPTS, "max_retries=0: only the gateway's attempts"


def test_sdk_retries_an_overloaded_answer(tenant_gateway: Gateway, recorder: RecordingTransport,
                                          mocks: dict[str, MockUpstream]) -> None:
    """With retries on (the SDK's default is 2), a 529 is retried by the SDK and the retry succeeds."""
    for m in mocks.values():
        m.reset()
    for _ in range(GATEWAY_OVERLOAD_ATTEMPTS):
        mocks["anthropic"].enqueue(Reply(status=529, body=OVERLOADED["anthropic"][1], headers={"retry-after": "0"}))
    with make_client(tenant_gateway, recorder, TENANT_KEYS["acme"], max_retries=1) as c:
        r = c.messages.create(model=MODELS["anthropic"], max_tokens=16, messages=MESSAGES)
    assert r.content[0].text == "Hello there!"
    assert [ex.status for ex in recorder.exchanges] == [529, 200]
    assert recorder.exchanges[0].headers.get("x-should-retry") == "true"
    assert len(mocks["anthropic"].chat_requests()) == GATEWAY_OVERLOAD_ATTEMPTS + 1


# ---------------------------------------------------------------- ledger


def usage_rows(gw: Gateway, key: str) -> list[dict]:
    r = httpx.get(gw.url + "/v1/usage?group_by=provider,model", headers={"authorization": f"Bearer {key}"},
                  timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def wait_for_requests(gw: Gateway, key: str, n: int) -> list[dict]:
    """The ledger writes asynchronously: poll (bounded) until `n` records are visible."""
    deadline = time.monotonic() + 15
    while True:
        rows = usage_rows(gw, key)
        if sum(r["requests"] for r in rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_one_ledger_record_per_request(tenant_gateway: Gateway, recorder: RecordingTransport,
                                       mocks: dict[str, MockUpstream]) -> None:
    for m in mocks.values():
        m.reset()
    key = TENANT_KEYS["ledger"]
    answers = {"anthropic": Answer(input_tokens=412, output_tokens=89, cache_read=2048, cache_creation=100),
               "openai": Answer(input_tokens=30, output_tokens=7, cache_read=10),
               "ollama": Answer(input_tokens=25, output_tokens=5)}
    with make_client(tenant_gateway, recorder, key) as c:
        for provider in PROVIDERS:
            for _ in range(2):
                mocks[provider].enqueue(Reply(answer=answers[provider]))
            c.messages.create(model=MODELS[provider], max_tokens=64, messages=MESSAGES)
            with c.messages.stream(model=MODELS[provider], max_tokens=64, messages=MESSAGES) as s:
                s.get_final_message()
        # count_tokens is not a generation: it writes no ledger record.
        c.messages.count_tokens(model=MODELS["ollama"], messages=MESSAGES)
        with pytest.raises(anthropic.RateLimitError):
            mocks["openai"].enqueue(Reply(status=429, body=RATE_LIMIT_BODY["openai"]))
            c.messages.create(model=MODELS["openai"], max_tokens=64, messages=MESSAGES)
    rows = wait_for_requests(tenant_gateway, key, 7)
    by = {(r["provider"], r["model"]): r for r in rows}
    assert sum(r["requests"] for r in rows) == 7, f"six answered requests and one failed, one record each: {rows}"
    a = by[("anthropic", "claude-sonnet-4-5")]
    assert a["requests"] == 2
    assert a["prompt_tokens"] == 2 * (412 + 2048 + 100), "prompt tokens include cached and cache-write tokens"
    assert (a["completion_tokens"], a["cached_tokens"], a["cache_write_tokens"]) == (2 * 89, 2 * 2048, 2 * 100)
    o = by[("openai", "gpt-4o-mini")]
    assert o["requests"] == 3, "the failed request is metered too"
    assert (o["prompt_tokens"], o["completion_tokens"], o["cached_tokens"]) == (2 * 40, 2 * 7, 2 * 10)
    ol = by[("ollama", "llama3.2")]
    assert (ol["requests"], ol["prompt_tokens"], ol["completion_tokens"]) == (2, 2 * 25, 2 * 5)
    for ex in recorder.exchanges:
        check_exchange(ex)


def test_stream_checker_is_not_vacuous() -> None:
    """The SSE contract check above rejects the stream bugs the SDKs crash on."""
    def ex(frames: list[tuple[str | None, dict]]) -> Exchange:
        body = "".join((f"event: {n}\n" if n else "") + f"data: {json.dumps(d)}\n\n" for n, d in frames)
        return Exchange("POST", "http://x/v1/messages", 200, "text/event-stream", bytearray(body.encode()))

    start = ("message_start", {"type": "message_start", "message": {"usage": {"input_tokens": 1}}})
    delta = ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                               "usage": {"input_tokens": 3, "output_tokens": 2}})
    stop = ("message_stop", {"type": "message_stop"})

    def block(i: int) -> list[tuple[str, dict]]:
        return [("content_block_start", {"type": "content_block_start", "index": i,
                                         "content_block": {"type": "text", "text": ""}}),
                ("content_block_delta", {"type": "content_block_delta", "index": i,
                                         "delta": {"type": "text_delta", "text": "x"}}),
                ("content_block_stop", {"type": "content_block_stop", "index": i})]

    assert check_exchange(ex([start, *block(0), *block(1), delta, stop])) == 9
    bad = [
        [start, *block(1), delta, stop],  # indices not from 0
        [start, *block(0), *block(2), delta, stop],  # gap
        [(None, start[1]), *block(0), delta, stop],  # no event: line
        [start, *block(0), ("message_delta", {**delta[1], "usage": {"output_tokens": 2}}), stop],  # no input_tokens
        [start, *block(0), stop],  # no message_delta
        [start, *block(0)[:2], delta, stop],  # block never stopped
    ]
    for frames in bad:
        with pytest.raises((AssertionError, KeyError)):
            check_exchange(ex(frames))
