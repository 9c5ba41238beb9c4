"""End-to-end tests with the OpenAI Agents SDK (PyPI `openai-agents`, in its default Responses mode) against the
gateway binary and the mock upstreams: an `Agent` with one function tool, run with `Runner.run` and
`Runner.run_streamed`, through `OpenAIResponsesModel` for the OpenAI pass-through and for translated backends
(Anthropic, Ollama). The client is pointed at the gateway with `set_default_openai_client(AsyncOpenAI(
base_url=<gateway>/v1, api_key=<tenant key>))`, tracing is off (`set_tracing_disabled(True)`): no network
besides loopback. Every body and stream event the SDK receives is validated against the OpenAPI schemas.

What the SDK sends (openai-agents 0.24): `POST /v1/responses` with the whole history as `input` items (no
`previous_response_id`), `instructions`, flat strict `function` tools, `include: []`, `store` unset (the API
default `true`: accepted statelessly by translated backends), `stream: true` for `run_streamed`; on the second
turn the `function_call` item it got back (with its `id` and `status`) plus a `function_call_output`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Iterator

import httpx
import pytest
from agents import (Agent, OpenAIResponsesModel, Runner, function_tool, set_default_openai_api,
                    set_default_openai_client, set_tracing_disabled)
from openai import AsyncOpenAI

from conftest import TENANT_KEYS, AsyncRecordingTransport, Gateway, validate_exchange
from mock_upstream import RESPONSES_PATH, Answer, MockUpstream, Reply, ToolCall

KEY = TENANT_KEYS["agents"]
# model given to the agent -> (mock flavor, path the mock receives, model the upstream receives)
CASES = {
    "gpt-4o-mini": ("openai", RESPONSES_PATH, "gpt-4o-mini"),
    "anthropic/claude-sonnet-4-5": ("anthropic", "/v1/messages", "claude-sonnet-4-5"),
    "ollama/llama3.2": ("ollama", "/api/chat", "llama3.2"),
}
CALL_ID = {"openai": "call_ag1", "anthropic": "toolu_01AG", "ollama": "call_ag_o1"}


@pytest.fixture
def async_client(tenant_gateway: Gateway, mocks: dict[str, MockUpstream]) -> Iterator[AsyncOpenAI]:
    for m in mocks.values():
        m.reset()
    recorder = AsyncRecordingTransport()
    client = AsyncOpenAI(base_url=tenant_gateway.url + "/v1", api_key=KEY, max_retries=0, timeout=20,
                         http_client=httpx.AsyncClient(transport=recorder))
    set_tracing_disabled(True)
    set_default_openai_api("responses")
    set_default_openai_client(client, use_for_tracing=False)
    yield client
    assert recorder.exchanges, "the SDK made no HTTP exchange"
    paths = {httpx.URL(ex.url).path for ex in recorder.exchanges}
    assert paths == {"/v1/responses"}, f"the Agents SDK only calls the Responses API here: {paths}"
    for ex in recorder.exchanges:
        validate_exchange(ex)


def make_agent(model: str, client: AsyncOpenAI, ran: list[str]) -> Agent:
    @function_tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        ran.append(city)
        return f"18C and sunny in {city}"

    # The pass-through case uses a plain model name through the default client, as a user would; names with
    # a provider prefix are given as an explicit OpenAIResponsesModel (the SDK reads `x/…` as its own
    # provider prefixes otherwise).
    agent_model = model if "/" not in model else OpenAIResponsesModel(model=model, openai_client=client)
    return Agent(name="Weather", instructions="Answer weather questions using the tool.", tools=[get_weather],
                 model=agent_model)


def script(mocks: dict[str, MockUpstream], flavor: str, path: str) -> None:
    mocks[flavor].enqueue(Reply(answer=Answer(text=[], tool_calls=[
        ToolCall(CALL_ID[flavor], "get_weather", {"city": "Paris"})])), path)
    mocks[flavor].enqueue(Reply(answer=Answer(text=["It is 18C and sunny ", "in Paris."])), path)


def check_upstream(mocks: dict[str, MockUpstream], flavor: str, path: str, upstream_model: str) -> None:
    sent = [r.json for r in mocks[flavor].requests_to(path)]
    assert len(sent) == 2, f"two model turns: {mocks[flavor].paths()}"
    assert all(s["model"] == upstream_model for s in sent)
    second = json.dumps(sent[1])
    assert "18C and sunny in Paris" in second, "the tool's output went back to the model"
    assert CALL_ID[flavor] in second, "with the call id"
    if flavor == "openai":
        assert sent[0]["instructions"] == "Answer weather questions using the tool."
        assert sent[0]["tools"][0]["type"] == "function" and sent[0]["tools"][0]["name"] == "get_weather"
        outputs = [i for i in sent[1]["input"] if i.get("type") == "function_call_output"]
        assert [o["call_id"] for o in outputs] == [CALL_ID[flavor]]
    for other, m in mocks.items():
        if other != flavor:
            assert m.requests == [], f"{other} mock got {m.paths()}"


@pytest.mark.parametrize("model", list(CASES))
def test_runner_run_with_function_tool(async_client: AsyncOpenAI, mocks: dict[str, MockUpstream],
                                       model: str) -> None:
    flavor, path, upstream_model = CASES[model]
    script(mocks, flavor, path)
    ran: list[str] = []
    agent = make_agent(model, async_client, ran)
    result = asyncio.run(Runner.run(agent, "What's the weather in Paris?", max_turns=4))
    assert result.final_output == "It is 18C and sunny in Paris."
    assert ran == ["Paris"], "the function tool ran once, with the model's arguments"
    kinds = [item.type for item in result.new_items]
    assert kinds == ["tool_call_item", "tool_call_output_item", "message_output_item"], kinds
    usage = result.context_wrapper.usage
    assert (usage.requests, usage.input_tokens, usage.output_tokens) == (2, 22, 12)
    check_upstream(mocks, flavor, path, upstream_model)


@pytest.mark.parametrize("model", list(CASES))
def test_runner_run_streamed_with_function_tool(async_client: AsyncOpenAI, mocks: dict[str, MockUpstream],
                                                model: str) -> None:
    flavor, path, upstream_model = CASES[model]
    script(mocks, flavor, path)
    ran: list[str] = []
    agent = make_agent(model, async_client, ran)

    async def go() -> tuple[object, list[str], list[str]]:
        result = Runner.run_streamed(agent, "What's the weather in Paris?", max_turns=4)
        deltas, items = [], []
        async for ev in result.stream_events():
            if ev.type == "raw_response_event" and ev.data.type == "response.output_text.delta":
                deltas.append(ev.data.delta)
            elif ev.type == "run_item_stream_event":
                items.append(ev.item.type)
        return result, deltas, items

    result, deltas, items = asyncio.run(go())
    assert result.final_output == "It is 18C and sunny in Paris."
    assert "".join(deltas) == "It is 18C and sunny in Paris.", "text streamed as deltas"
    assert ran == ["Paris"]
    assert items == ["tool_call_item", "tool_call_output_item", "message_output_item"], items
    sent = [r.json for r in mocks[flavor].requests_to(path)]
    assert all(s.get("stream") is True for s in sent)
    check_upstream(mocks, flavor, path, upstream_model)
