"""End-to-end tests of the rest of the OpenAI surface (issue #13) with the official `openai` Python SDK against
the gateway binary and the mock upstreams: `client.responses` (create, streamed both ways, function tools with
a `function_call_output` round trip, `text.format` json_schema, `instructions`, `max_output_tokens` →
`incomplete`, retrieve/cancel/delete), `client.embeddings` (float and the SDK's default base64) and the legacy
`client.completions`, for OpenAI (pass-through) and Anthropic and Ollama (translated), with the errors as the
SDK's typed exceptions and the ledger rows read back through `GET /v1/usage`.

Every body and stream event the SDK receives is validated against the OpenAPI schemas (conftest.py
`validate_exchange`: `Response`, each `ResponseStreamEvent` member, `CreateEmbeddingResponse` with base64
decoded, `CreateCompletionResponse`, `ErrorResponse`)."""

from __future__ import annotations

import base64
import json
import struct
import time
from typing import Iterator

import httpx
import openai
import pytest

from conftest import TENANT_KEYS, Gateway, RecordingTransport, validate_exchange
from mock_upstream import (EMBEDDING_TOKENS_PER_INPUT, RESPONSES_PATH, Answer, MockUpstream, Reply, ToolCall,
                           embedding_vector)

KEY = TENANT_KEYS["responses"]
MODELS = {"openai": "gpt-4o-mini", "anthropic": "anthropic/claude-sonnet-4-5", "ollama": "ollama/llama3.2"}
UPSTREAM_MODEL = {"openai": "gpt-4o-mini", "anthropic": "claude-sonnet-4-5", "ollama": "llama3.2"}
# Where each provider's mock receives a Responses request: OpenAI natively, the others as chat.
RESPONSES_UPSTREAM_PATH = {"openai": RESPONSES_PATH, "anthropic": "/v1/messages", "ollama": "/api/chat"}
PROVIDERS = list(MODELS)
TRANSLATED = ["anthropic", "ollama"]
TOOL = {"type": "function", "name": "get_weather", "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                       "additionalProperties": False},
        "strict": True}
CALL_ID = {"openai": "call_w1", "anthropic": "toolu_01W", "ollama": "call_o1"}
EMBED_MODELS = {"openai": "openai/text-embedding-3-small", "ollama": "ollama/nomic-embed-text"}


@pytest.fixture
def client(tenant_gateway: Gateway, mocks: dict[str, MockUpstream]) -> Iterator[openai.OpenAI]:
    """An SDK client of tenant `responses` whose every exchange is validated against the OpenAPI schemas."""
    for m in mocks.values():
        m.reset()
    recorder = RecordingTransport()
    c = openai.OpenAI(base_url=tenant_gateway.url + "/v1", api_key=KEY, max_retries=0, timeout=20,
                      http_client=httpx.Client(transport=recorder))
    yield c
    c.close()
    assert recorder.exchanges, "the test made no HTTP exchange"
    for ex in recorder.exchanges:
        validate_exchange(ex)


def upstream_requests(mocks: dict[str, MockUpstream], provider: str, path: str | None = None) -> list[dict]:
    return [r.json for r in mocks[provider].requests_to(path or RESPONSES_UPSTREAM_PATH[provider])]


def enqueue(mocks: dict[str, MockUpstream], provider: str, answer: Answer) -> None:
    mocks[provider].enqueue(Reply(answer=answer), RESPONSES_UPSTREAM_PATH[provider])


# ---------------------------------------------------------------- responses.create


@pytest.mark.parametrize("provider", PROVIDERS)
def test_responses_text_with_instructions(client: openai.OpenAI, mocks: dict[str, MockUpstream],
                                          provider: str) -> None:
    r = client.responses.create(model=MODELS[provider], input="Say hello", instructions="Be brief.",
                                metadata={"case": "text"})
    assert r.object == "response" and r.status == "completed"
    assert r.output_text == "Hello there!"
    [msg] = r.output
    assert msg.type == "message" and msg.role == "assistant" and msg.status == "completed"
    assert r.usage is not None
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (11, 6, 17)
    assert r.instructions == "Be brief."
    [sent] = upstream_requests(mocks, provider)
    assert sent["model"] == UPSTREAM_MODEL[provider]
    if provider == "openai":
        assert sent == {"model": "gpt-4o-mini", "input": "Say hello", "instructions": "Be brief.",
                        "metadata": {"case": "text"}}, "passed through, only the model renamed"
        assert r.model == "gpt-4o-mini"
    elif provider == "anthropic":
        assert "Be brief." in json.dumps(sent["system"])
        assert sent["messages"][-1]["role"] == "user" and "Say hello" in json.dumps(sent["messages"][-1])
    else:
        assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
        assert sent["messages"][-1] == {"role": "user", "content": "Say hello"}
    if provider != "openai":
        assert r.model == MODELS[provider], "a translated response names the model the client asked for"
        assert r.metadata == {"case": "text"}


def _check_event_stream(events: list, final_status: str = "completed") -> None:
    types = [e.type for e in events]
    assert [e.sequence_number for e in events] == list(range(len(events))), "sequence_number from 0, no gaps"
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == f"response.{final_status}", types
    assert sum(t in ("response.completed", "response.incomplete", "response.failed") for t in types) == 1
    assert types.index("response.output_item.added") < types.index("response.output_item.done")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_responses_stream_true(client: openai.OpenAI, mocks: dict[str, MockUpstream], provider: str) -> None:
    mocks[provider].default_answer = Answer(text=["Hel", "lo", " there!"])
    events = list(client.responses.create(model=MODELS[provider], input="Say hello", stream=True))
    _check_event_stream(events)
    types = [e.type for e in events]
    assert types == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", *["response.output_text.delta"] * 3,
                     "response.output_text.done", "response.content_part.done", "response.output_item.done",
                     "response.completed"], types
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Hello there!"
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == "Hello there!"
    final = events[-1].response
    assert final.status == "completed" and final.output_text == "Hello there!"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 6)
    assert final.id == events[0].response.id, "one response id for the whole stream"
    [sent] = upstream_requests(mocks, provider)
    assert sent["stream"] is True


@pytest.mark.parametrize("provider", PROVIDERS)
def test_responses_stream_helper(client: openai.OpenAI, mocks: dict[str, MockUpstream], provider: str) -> None:
    deltas = []
    with client.responses.stream(model=MODELS[provider], input="Say hello", instructions="Be brief.") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert "".join(deltas) == "Hello there!"
    assert final.status == "completed" and final.output_text == "Hello there!"
    assert final.usage.total_tokens == 17


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_function_tool_round_trip(client: openai.OpenAI, mocks: dict[str, MockUpstream], provider: str,
                                  stream: bool) -> None:
    """The model calls `get_weather`; the client runs it and sends `function_call_output` with the whole
    history (stateless: no previous_response_id); the model then answers with text."""
    enqueue(mocks, provider, Answer(text=[], tool_calls=[ToolCall(CALL_ID[provider], "get_weather",
                                                                  {"city": "Paris"})]))
    enqueue(mocks, provider, Answer(text=["It is 18°C in Paris."]))
    history: list = [{"role": "user", "content": "Weather in Paris?"}]

    def create(**kw):
        if not stream:
            return client.responses.create(**kw)
        with client.responses.stream(**kw) as s:
            for _ in s:
                pass
            return s.get_final_response()

    r = create(model=MODELS[provider], input=history, tools=[TOOL], store=False)
    calls = [o for o in r.output if o.type == "function_call"]
    assert len(calls) == 1, r.output
    call = calls[0]
    assert (call.call_id, call.name, json.loads(call.arguments)) == (CALL_ID[provider], "get_weather",
                                                                    {"city": "Paris"})
    history += [o.model_dump(exclude_none=True) for o in r.output]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"temp_c": 18})})
    r2 = create(model=MODELS[provider], input=history, tools=[TOOL], store=False)
    assert r2.output_text == "It is 18°C in Paris."

    first, second = upstream_requests(mocks, provider)
    if provider == "openai":
        assert first["tools"] == [TOOL], "flat function tools passed through"
        outputs = [i for i in second["input"] if i.get("type") == "function_call_output"]
        assert outputs == [{"type": "function_call_output", "call_id": CALL_ID[provider],
                            "output": '{"temp_c": 18}'}]
    elif provider == "anthropic":
        assert first["tools"][0]["name"] == "get_weather"
        assert first["tools"][0]["input_schema"]["properties"] == {"city": {"type": "string"}}
        results = [b for m in second["messages"] if isinstance(m["content"], list) for b in m["content"]
                   if b.get("type") == "tool_result"]
        assert [b["tool_use_id"] for b in results] == [CALL_ID[provider]]
        assert "temp_c" in json.dumps(results[0]["content"])
        uses = [b for m in second["messages"] if m["role"] == "assistant" for b in m["content"]
                if b.get("type") == "tool_use"]
        assert uses[0]["id"] == CALL_ID[provider] and uses[0]["input"] == {"city": "Paris"}
    else:
        assert first["tools"][0]["function"]["name"] == "get_weather"
        tool_msgs = [m for m in second["messages"] if m["role"] == "tool"]
        assert len(tool_msgs) == 1 and "temp_c" in tool_msgs[0]["content"]
        assistant = [m for m in second["messages"] if m["role"] == "assistant"]
        assert assistant[0]["tool_calls"][0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_text_format_json_schema(client: openai.OpenAI, mocks: dict[str, MockUpstream], provider: str) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "temperature_c": {"type": "number"}},
              "required": ["city", "temperature_c"], "additionalProperties": False}
    answer = json.dumps({"city": "Paris", "temperature_c": 18})
    mocks[provider].default_answer = Answer(text=[answer])
    r = client.responses.create(model=MODELS[provider], input="Weather in Paris as JSON",
                                text={"format": {"type": "json_schema", "name": "weather", "schema": schema,
                                                 "strict": True}})
    assert json.loads(r.output_text) == {"city": "Paris", "temperature_c": 18}
    assert r.text.format.type == "json_schema"
    [sent] = upstream_requests(mocks, provider)
    if provider == "openai":
        assert sent["text"]["format"]["schema"] == schema
    else:
        assert "temperature_c" in json.dumps(sent), f"the schema reaches the backend: {sent}"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_max_output_tokens_gives_incomplete(client: openai.OpenAI, mocks: dict[str, MockUpstream],
                                            provider: str) -> None:
    mocks[provider].default_answer = Answer(text=["Once upon a"], output_tokens=16, truncated=True)
    r = client.responses.create(model=MODELS[provider], input="Tell a story", max_output_tokens=16)
    assert r.status == "incomplete"
    assert r.incomplete_details is not None and r.incomplete_details.reason == "max_output_tokens"
    assert r.output_text == "Once upon a"
    assert r.usage.output_tokens == 16
    events = list(client.responses.create(model=MODELS[provider], input="Tell a story", max_output_tokens=16,
                                          stream=True))
    _check_event_stream(events, "incomplete")
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    sent = upstream_requests(mocks, provider)[0]
    if provider == "openai":
        assert sent["max_output_tokens"] == 16
    elif provider == "anthropic":
        assert sent["max_tokens"] == 16
    else:
        assert sent["options"]["num_predict"] == 16


# ---------------------------------------------------------------- stateless refusals and errors


@pytest.mark.parametrize("provider", TRANSLATED)
@pytest.mark.parametrize("kwargs, param", [
    ({"previous_response_id": "resp_abc123"}, "previous_response_id"),
    ({"conversation": "conv_abc123"}, "conversation"),
    ({"background": True}, "background"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[0].type"),
    ({"prompt": {"id": "pmpt_abc"}}, "prompt"),
], ids=["previous_response_id", "conversation", "background", "web_search", "file_search", "prompt"])
def test_stateful_and_hosted_fields_are_refused_when_translating(client: openai.OpenAI,
                                                                 mocks: dict[str, MockUpstream], provider: str,
                                                                 kwargs: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODELS[provider], input="hi", **kwargs)
    assert e.value.status_code == 400
    assert e.value.param == param, e.value.body
    assert upstream_requests(mocks, provider) == [], "refused before any upstream call"


@pytest.mark.parametrize("provider", TRANSLATED)
def test_store_true_is_accepted_statelessly(client: openai.OpenAI, mocks: dict[str, MockUpstream],
                                            provider: str) -> None:
    r = client.responses.create(model=MODELS[provider], input="hi", store=True)
    assert r.status == "completed"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)  # nothing was stored: the id is unknown where responses live


def test_stateful_fields_pass_through_to_openai(client: openai.OpenAI, mocks: dict[str, MockUpstream]) -> None:
    r = client.responses.create(model="gpt-4o-mini", input="hi", previous_response_id="resp_prev1",
                                store=True, include=["reasoning.encrypted_content"], prompt_cache_key="k1")
    assert r.previous_response_id == "resp_prev1"
    [sent] = upstream_requests(mocks, "openai")
    assert sent["previous_response_id"] == "resp_prev1" and sent["prompt_cache_key"] == "k1"


def test_retrieve_cancel_delete_against_openai(client: openai.OpenAI, mocks: dict[str, MockUpstream]) -> None:
    created = client.responses.create(model="gpt-4o-mini", input="Say hello")
    got = client.responses.retrieve(created.id)
    assert got.id == created.id and got.output_text == "Hello there!"
    cancelled = client.responses.cancel(created.id)
    assert cancelled.id == created.id and cancelled.status == "cancelled"
    assert client.responses.delete(created.id) is None
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.retrieve(created.id)
    assert e.value.status_code == 404
    assert mocks["openai"].paths() == [
        "POST /v1/responses", f"GET /v1/responses/{created.id}", f"POST /v1/responses/{created.id}/cancel",
        f"DELETE /v1/responses/{created.id}", f"GET /v1/responses/{created.id}"]
    auth = {r.headers.get("authorization") for r in mocks["openai"].requests}
    assert auth == {"Bearer sk-upstream-openai-test"}, "the tenant key is replaced by the provider's"


def test_upstream_rate_limit_is_a_rate_limit_error(client: openai.OpenAI, mocks: dict[str, MockUpstream]) -> None:
    body = {"error": {"message": "Rate limit reached", "type": "requests", "param": None,
                      "code": "rate_limit_exceeded"}}
    mocks["openai"].enqueue(Reply(status=429, body=body, headers={"retry-after": "7"}), RESPONSES_PATH)
    with pytest.raises(openai.RateLimitError) as e:
        client.responses.create(model="gpt-4o-mini", input="hi")
    assert e.value.response.headers.get("retry-after") == "7"


def test_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(model="no-such-model-xyz", input="hi")
    assert e.value.code == "model_not_found"


@pytest.mark.parametrize("provider", TRANSLATED)
def test_midstream_failure_ends_with_response_failed(client: openai.OpenAI, mocks: dict[str, MockUpstream],
                                                     provider: str) -> None:
    mocks[provider].enqueue(Reply(answer=Answer(text=["a", "b", "c", "d"]), error_after=3))
    events = []
    try:
        for e in client.responses.create(model=MODELS[provider], input="hi", stream=True):
            events.append(e)
    except openai.APIError:
        pass  # an `error` event is also an acceptable ending, as long as it is not a fake completion
    types = [e.type for e in events]
    assert "response.completed" not in types, types
    assert types and types[-1] in ("response.failed", "error"), types


def test_bad_key_is_authentication_error(tenant_gateway: Gateway) -> None:
    c = openai.OpenAI(base_url=tenant_gateway.url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        c.responses.create(model="gpt-4o-mini", input="hi")


# ---------------------------------------------------------------- embeddings


def _expected(texts: list[str], dims: int = 8) -> list[list[float]]:
    return [embedding_vector(t, dims) for t in texts]


@pytest.mark.parametrize("provider", list(EMBED_MODELS))
@pytest.mark.parametrize("encoding", ["default", "float", "base64"])
def test_embeddings(client: openai.OpenAI, mocks: dict[str, MockUpstream], provider: str, encoding: str) -> None:
    texts = ["hello world", "the quick brown fox", "zebra"]
    kw = {} if encoding == "default" else {"encoding_format": encoding}
    r = client.embeddings.create(model=EMBED_MODELS[provider], input=texts, **kw)
    assert [d.index for d in r.data] == [0, 1, 2]
    if encoding == "base64":
        # Asked explicitly, the SDK returns the base64 strings as they came: decode little-endian float32.
        got = [list(struct.unpack(f"<{len(base64.b64decode(d.embedding)) // 4}f", base64.b64decode(d.embedding)))
               for d in r.data]
    else:
        got = [d.embedding for d in r.data]
    # By default the SDK asks for base64 and decodes it itself: the vectors must be the same exact floats.
    assert got == _expected(texts), "vectors survive the encoding exactly (no quarter-width floats)"
    assert r.usage.prompt_tokens == EMBEDDING_TOKENS_PER_INPUT * 3 == r.usage.total_tokens
    [sent] = upstream_requests(mocks, provider, "/v1/embeddings" if provider == "openai" else "/api/embed")
    assert sent["input"] == texts
    if provider == "openai":
        assert sent["model"] == "text-embedding-3-small"
        assert sent["encoding_format"] == ("base64" if encoding == "default" else encoding)
    else:
        assert sent["model"] == "nomic-embed-text"
        assert "encoding_format" not in sent, "Ollama's /api/embed has no encoding: the gateway encodes"


@pytest.mark.parametrize("provider", list(EMBED_MODELS))
def test_embeddings_single_string_and_dimensions(client: openai.OpenAI, mocks: dict[str, MockUpstream],
                                                 provider: str) -> None:
    r = client.embeddings.create(model=EMBED_MODELS[provider], input="hello", dimensions=4)
    assert [d.embedding for d in r.data] == _expected(["hello"], 4)
    path = "/v1/embeddings" if provider == "openai" else "/api/embed"
    assert upstream_requests(mocks, provider, path)[0]["dimensions"] == 4


def test_embeddings_refused_for_anthropic_and_token_input_for_ollama(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="anthropic/claude-sonnet-4-5", input="hello")
    assert e.value.param == "model"
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=EMBED_MODELS["ollama"], input=[[1, 2, 3]])
    assert e.value.param == "input"


# ---------------------------------------------------------------- legacy completions


@pytest.mark.parametrize("provider", PROVIDERS)
def test_completions(client: openai.OpenAI, mocks: dict[str, MockUpstream], provider: str) -> None:
    r = client.completions.create(model=MODELS[provider], prompt="Say hello", max_tokens=20)
    assert r.object == "text_completion"
    assert r.choices[0].text == "Hello there!" and r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (11, 6)
    chunks = list(client.completions.create(model=MODELS[provider], prompt="Say hello", max_tokens=20,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Hello there!"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    # Translated through chat for every backend: one user turn holding the prompt, max_tokens kept.
    sent = [r.json for r in mocks[provider].chat_requests()]
    assert len(sent) == 2
    assert "Say hello" in json.dumps(sent[0]["messages"])


def test_completions_truncated_is_length(client: openai.OpenAI, mocks: dict[str, MockUpstream]) -> None:
    mocks["ollama"].default_answer = Answer(text=["Once upon"], truncated=True)
    r = client.completions.create(model=MODELS["ollama"], prompt="Tell a story")
    assert r.choices[0].finish_reason == "length"
    assert mocks["ollama"].chat_requests()[0].json["options"]["num_predict"] == 16, "OpenAI's default max_tokens"


# ---------------------------------------------------------------- ledger


def usage_rows(gw: Gateway) -> dict[tuple[str, str], dict]:
    r = httpx.get(gw.url + "/v1/usage?group_by=provider,model", headers={"authorization": f"Bearer {KEY}"},
                  timeout=10)
    assert r.status_code == 200, r.text
    return {(row["provider"], row["model"]): row for row in r.json()["data"]}


def settled_usage(gw: Gateway) -> dict[tuple[str, str], dict]:
    """The usage rows once the asynchronous ledger writes of earlier tests have landed."""
    last = usage_rows(gw)
    for _ in range(50):
        time.sleep(0.3)
        now = usage_rows(gw)
        if now == last:
            return now
        last = now
    return last


def test_each_request_is_metered_once(client: openai.OpenAI, tenant_gateway: Gateway,
                                      mocks: dict[str, MockUpstream]) -> None:
    before = settled_usage(tenant_gateway)
    for provider in PROVIDERS:
        client.responses.create(model=MODELS[provider], input="hi")
        list(client.responses.create(model=MODELS[provider], input="hi", stream=True))
        client.completions.create(model=MODELS[provider], prompt="hi")
    for provider in EMBED_MODELS:
        client.embeddings.create(model=EMBED_MODELS[provider], input=["a", "b"])
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MODELS["anthropic"], input="hi", previous_response_id="resp_x")
    want = {("openai", "gpt-4o-mini"): (3, 33, 18), ("anthropic", "claude-sonnet-4-5"): (4, 33, 18),
            ("ollama", "llama3.2"): (3, 33, 18),
            ("openai", "text-embedding-3-small"): (1, 6, 0), ("ollama", "nomic-embed-text"): (1, 6, 0)}
    deadline = time.monotonic() + 15
    while True:
        now = usage_rows(tenant_gateway)
        got = {k: tuple(now.get(k, {}).get(f, 0) - before.get(k, {}).get(f, 0)
                        for f in ("requests", "prompt_tokens", "completion_tokens")) for k in want}
        if got == want or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert got == want, f"one record per request (the refused one included, at zero tokens): {got}"
    vectors = json.dumps(list(now.values()))
    assert "embedding" not in vectors.replace("text-embedding", ""), "no vectors in the ledger"
