"""End-to-end tests with the official `openai` Python SDK against the gateway binary and mock upstreams.

Every JSON body and stream chunk the SDK receives is validated against the OpenAPI schemas by the `client`
fixture (conftest.py)."""

from __future__ import annotations

import json

import openai
import pytest

from mock_upstream import Answer, MockUpstream, Reply, ToolCall

MODELS = {
    "openai": "gpt-4o-mini",
    "anthropic": "anthropic/claude-sonnet-4-5",
    "ollama": "ollama/llama3.2",
}
UPSTREAM_MODEL = {"openai": "gpt-4o-mini", "anthropic": "claude-sonnet-4-5", "ollama": "llama3.2"}
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
CALLS = {
    "openai": [ToolCall("call_a1", "get_weather", {"city": "Paris"}),
               ToolCall("call_b2", "get_weather", {"city": "Tokyo"})],
    "anthropic": [ToolCall("toolu_01A", "get_weather", {"city": "Paris"}),
                  ToolCall("toolu_01B", "get_weather", {"city": "Tokyo"})],
    "ollama": [ToolCall("call_k3j9x2ab", "get_weather", {"city": "Paris"}),
               ToolCall("call_m4n5p6qr", "get_weather", {"city": "Tokyo"})],
}
MESSAGES = [{"role": "user", "content": "Say hello"}]
PROVIDERS = list(MODELS)


def upstream_request(mock: MockUpstream) -> dict:
    reqs = mock.chat_requests()
    assert len(reqs) == 1, f"expected one upstream chat request, got {len(reqs)}"
    return reqs[0].json


@pytest.mark.parametrize("provider", PROVIDERS)
def test_text_non_stream(client: openai.OpenAI, mocks: dict[str, MockUpstream], provider: str) -> None:
    r = client.chat.completions.create(model=MODELS[provider], messages=MESSAGES)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == "Hello there!"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (11, 6, 17)
    sent = upstream_request(mocks[provider])
    assert sent["model"] == UPSTREAM_MODEL[provider]
    if provider == "anthropic":
        assert sent["messages"] == [{"role": "user", "content": "Say hello"}] or \
            sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Say hello"}]}]
        assert isinstance(sent["max_tokens"], int) and sent["max_tokens"] > 0
        hdrs = mocks[provider].chat_requests()[0].headers
        assert hdrs.get("x-api-key") == "sk-ant-upstream-test"
        assert hdrs.get("anthropic-version") == "2023-06-01"
    elif provider == "ollama":
        assert sent["stream"] is False
        assert sent["messages"] == [{"role": "user", "content": "Say hello"}]
    else:
        assert mocks[provider].chat_requests()[0].headers.get("authorization") == "Bearer sk-upstream-openai-test"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_text_stream_with_usage(client: openai.OpenAI, mocks: dict[str, MockUpstream], provider: str) -> None:
    stream = client.chat.completions.create(model=MODELS[provider], messages=MESSAGES, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello there!"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert len({c.id for c in chunks}) == 1, "every chunk carries the same id"
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1]
    assert chunks[-1].choices == []
    u = chunks[-1].usage
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (11, 6, 17)
    assert upstream_request(mocks[provider])["stream"] is True


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_without_usage_has_no_usage(client: openai.OpenAI, provider: str) -> None:
    chunks = list(client.chat.completions.create(model=MODELS[provider], messages=MESSAGES, stream=True))
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks), "no `choices: []` chunk without include_usage"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tool_calls_non_stream(client: openai.OpenAI, mocks: dict[str, MockUpstream], provider: str) -> None:
    mocks[provider].enqueue(Reply(answer=Answer(text=[], tool_calls=CALLS[provider])))
    r = client.chat.completions.create(model=MODELS[provider], messages=MESSAGES, tools=TOOLS)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert [c.id for c in calls] == [c.id for c in CALLS[provider]]
    assert [c.function.name for c in calls] == ["get_weather", "get_weather"]
    assert [json.loads(c.function.arguments) for c in calls] == [c.input for c in CALLS[provider]]
    sent = upstream_request(mocks[provider])
    if provider == "anthropic":
        assert sent["tools"][0]["name"] == "get_weather"
        assert sent["tools"][0]["input_schema"]["properties"] == {"city": {"type": "string"}}
    else:
        assert sent["tools"][0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tool_calls_stream(client: openai.OpenAI, mocks: dict[str, MockUpstream], provider: str) -> None:
    mocks[provider].enqueue(Reply(answer=Answer(text=["Let me check."], tool_calls=CALLS[provider])))
    chunks = list(client.chat.completions.create(model=MODELS[provider], messages=MESSAGES, tools=TOOLS,
                                                 stream=True))
    calls: dict[int, dict] = {}
    for c in chunks:
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            entry = calls.setdefault(tc.index, {"id": None, "name": None, "args": ""})
            if tc.id:
                assert entry["id"] is None, "id only in the first fragment"
                entry["id"] = tc.id
            if tc.function and tc.function.name:
                entry["name"] = tc.function.name
            if tc.function and tc.function.arguments:
                entry["args"] += tc.function.arguments
    assert sorted(calls) == [0, 1], f"tool call indices must be 0 and 1, got {sorted(calls)}"
    assert [calls[i]["id"] for i in (0, 1)] == [c.id for c in CALLS[provider]]
    assert [calls[i]["name"] for i in (0, 1)] == ["get_weather"] * 2
    assert [json.loads(calls[i]["args"]) for i in (0, 1)] == [c.input for c in CALLS[provider]]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Let me check."


def test_anthropic_cache_usage(client: openai.OpenAI, mocks: dict[str, MockUpstream]) -> None:
    a = Answer(input_tokens=412, output_tokens=89, cache_read=2048, cache_creation=100)
    mocks["anthropic"].enqueue(Reply(answer=a))
    mocks["anthropic"].enqueue(Reply(answer=a))
    r = client.chat.completions.create(model=MODELS["anthropic"], messages=MESSAGES)
    assert r.usage.prompt_tokens == 412 + 2048 + 100
    assert r.usage.completion_tokens == 89
    assert r.usage.total_tokens == 412 + 2048 + 100 + 89
    assert r.usage.prompt_tokens_details.cached_tokens == 2048
    chunks = list(client.chat.completions.create(model=MODELS["anthropic"], messages=MESSAGES, stream=True,
                                                 stream_options={"include_usage": True}))
    u = chunks[-1].usage
    assert (u.prompt_tokens, u.completion_tokens) == (412 + 2048 + 100, 89)
    assert u.prompt_tokens_details.cached_tokens == 2048


@pytest.mark.parametrize("provider", PROVIDERS)
def test_midstream_upstream_error_raises_api_error(client: openai.OpenAI, mocks: dict[str, MockUpstream],
                                                   provider: str) -> None:
    mocks[provider].enqueue(Reply(answer=Answer(text=["a", "b", "c", "d"]), error_after=3))
    stream = client.chat.completions.create(model=MODELS[provider], messages=MESSAGES, stream=True)
    got = []
    with pytest.raises(openai.APIError):
        for c in stream:
            got.append(c)
    assert got, "content before the error reaches the client"


@pytest.mark.parametrize("provider", ["anthropic", "ollama"])
def test_midstream_disconnect_raises_api_error(client: openai.OpenAI, mocks: dict[str, MockUpstream],
                                               provider: str) -> None:
    mocks[provider].enqueue(Reply(answer=Answer(text=["a", "b", "c", "d"]), disconnect_after=3))
    stream = client.chat.completions.create(model=MODELS[provider], messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


def test_unknown_model_raises_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model-xyz", messages=MESSAGES)
    assert e.value.status_code == 404
    assert e.value.code == "model_not_found"


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_rate_limit_raises_rate_limit_error(client: openai.OpenAI, mocks: dict[str, MockUpstream],
                                            provider: str) -> None:
    body = ({"error": {"message": "Rate limit reached", "type": "requests", "param": None,
                       "code": "rate_limit_exceeded"}} if provider == "openai" else
            {"type": "error", "error": {"type": "rate_limit_error", "message": "Number of requests exceeded"}})
    mocks[provider].enqueue(Reply(status=429, body=body, headers={"retry-after": "17"}))
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model=MODELS[provider], messages=MESSAGES)
    assert e.value.response.headers.get("retry-after") == "17"
    assert len(mocks[provider].chat_requests()) == 1, "max_retries=0: one upstream call"


def test_models_list(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    for expected in ("openai/gpt-4o-mini", "anthropic/claude-sonnet-4-5-20250929", "ollama/llama3.2:latest",
                     "ollama/hf.co/org/repo:Q4_K_M"):
        assert expected in ids, f"{expected} not in {sorted(ids)}"


def test_model_retrieve_with_slashes(client: openai.OpenAI) -> None:
    m = client.models.retrieve("ollama/hf.co/org/repo:Q4_K_M")
    assert m.id == "ollama/hf.co/org/repo:Q4_K_M"
    assert m.object == "model"


def test_schema_validators_are_not_vacuous() -> None:
    """The OpenAPI-derived validators reject malformed documents (so passing validation means something)."""
    import openapi_schemas

    good_chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                  "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]}
    openapi_schemas.chunk(good_chunk)
    for bad in ({**good_chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "bogus"}]},
                {k: v for k, v in good_chunk.items() if k != "created"},
                {**good_chunk, "object": "chat.completion"}):
        with pytest.raises(AssertionError):
            openapi_schemas.chunk(bad)
    with pytest.raises(AssertionError):
        openapi_schemas.error({"error": {"message": "m", "type": "t"}})  # param and code are required
    openapi_schemas.error({"error": {"message": "m", "type": "t", "param": None, "code": None}})
    with pytest.raises(AssertionError):
        openapi_schemas.model_list({"object": "list", "data": [{"id": "x", "object": "model"}]})
