"""End-to-end tests with Claude Code itself (npm `@anthropic-ai/claude-code`, pinned in tests/node/package.json
and installed by scripts/test into tests/node/node_modules) in print mode against the gateway and the mock
upstreams: `claude -p "say hi" --output-format json --model <model>` with `ANTHROPIC_BASE_URL=<gateway>`,
`ANTHROPIC_AUTH_TOKEN=<tenant key>` and `ANTHROPIC_API_KEY=""`, in a temporary HOME, with non-essential
traffic, telemetry, error reporting and auto-updates off.

Claude Code version used: 2.1.332 (native linux-x64 binary shipped in the registry package).

Endpoints it actually called (paths the mocks saw, and the gateway's ledger), with
CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1:
- one streamed `POST /v1/messages?beta=true` per turn for the chosen model, with `anthropic-version:
  2023-06-01` and `anthropic-beta: claude-code-20250219,interleaved-thinking-2025-05-14,
  context-management-2025-06-27,…`; body with `thinking {type: adaptive}`, `output_config.effort`,
  `context_management`, `metadata.user_id`, 12 tools (some with `defer_loading`), `max_tokens: 32000`, and
  the attribution block first in `system`;
- no count_tokens, no `GET /v1/models`, no Haiku-class background call (titles/topics are non-essential
  traffic) and no `HEAD /` in print mode.
- For a model it does not know (`openai/…`, `ollama/…`; it logs `[claude-code:unrecognized_model]` on
  stderr) it moves the environment block into a `role: "system"` turn inside `messages`; the gateway's
  translator used to answer 400 to that, after which Claude Code resent the request in the old layout (two
  attempts and a failed ledger record per turn). Fixed in translators::anthropic_ingress (see
  `system_turns_inside_messages_reach_translated_backends` in tests/tests/anthropic_ingress.rs).

Bare `claude-*` names (its Haiku-class model included, should it call one) reach the Anthropic mock through
the gateway's built-in `claude-*` route.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import time
from typing import Any

import httpx
import pytest

from conftest import REPO, TENANT_KEYS, Gateway
from mock_upstream import Answer, MockUpstream, Recorded, Reply, ToolCall


def claude_binary() -> pathlib.Path | None:
    env = os.environ.get("CLAUDE_CODE_BIN")
    if env:
        return pathlib.Path(env)
    p = REPO / "tests" / "node" / "node_modules" / ".bin" / "claude"
    return p if p.exists() else None


CLAUDE = claude_binary()
if CLAUDE is None:
    pytest.skip("Claude Code is not installed: run `npm ci` in tests/node (scripts/test does when node and npm "
                "are present) or set CLAUDE_CODE_BIN", allow_module_level=True)

KEY = TENANT_KEYS["claude"]
TIMEOUT_S = 120
# model flag -> (mock flavor, model the upstream receives)
CASES = {
    "claude-sonnet-4-5": ("anthropic", "claude-sonnet-4-5"),
    "anthropic/claude-sonnet-4-5": ("anthropic", "claude-sonnet-4-5"),
    "openai/gpt-4o-mini": ("openai", "gpt-4o-mini"),
    "ollama/llama3.2": ("ollama", "llama3.2"),
}


def run_claude(tmp: pathlib.Path, gw: Gateway, model: str, prompt: str, *extra: str) -> dict[str, Any]:
    home, work = tmp / "home", tmp / "work"
    home.mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)
    # Skip onboarding and the folder-trust prompt (print mode does not ask, but a fresh HOME must not either).
    (home / ".claude.json").write_text(json.dumps({
        "hasCompletedOnboarding": True, "bypassPermissionsModeAccepted": False,
        "projects": {str(work): {"hasTrustDialogAccepted": True, "hasCompletedProjectOnboarding": True}}}))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANTHROPIC", "CLAUDE", "OTEL", "AWS_", "GOOGLE_", "VERTEX", "HTTP_PROXY",
                                "HTTPS_PROXY", "http_proxy", "https_proxy"))}
    env.update({
        "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": str(home / ".cache"),
        "ANTHROPIC_BASE_URL": gw.url, "ANTHROPIC_AUTH_TOKEN": KEY, "ANTHROPIC_API_KEY": "",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1", "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1", "DISABLE_BUG_COMMAND": "1", "NO_PROXY": "127.0.0.1,localhost",
    })
    try:
        p = subprocess.run([str(CLAUDE), "-p", prompt, "--output-format", "json", "--model", model, *extra],
                           env=env, cwd=work, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"claude did not finish within {TIMEOUT_S} s: {e.stdout!r} {e.stderr!r}") from None
    assert p.returncode == 0, f"claude exited {p.returncode}: {p.stdout.decode()[-2000:]} {p.stderr.decode()[-2000:]}"
    out = json.loads(p.stdout)
    out["_stderr"] = p.stderr.decode()
    return out


def usage_rows(gw: Gateway) -> dict[tuple[str, str], dict]:
    r = httpx.get(gw.url + "/v1/usage?group_by=provider,model", headers={"authorization": f"Bearer {KEY}"},
                  timeout=10)
    assert r.status_code == 200, r.text
    return {(row["provider"], row["model"]): row for row in r.json()["data"]}


def ledger_delta(gw: Gateway, before: dict, key: tuple[str, str], want_requests: int) -> dict:
    """Waits (bounded: the ledger writes asynchronously) for `want_requests` new records under `key`."""
    deadline = time.monotonic() + 15
    while True:
        now = usage_rows(gw)
        row, old = now.get(key, {}), before.get(key, {})
        delta = {k: row.get(k, 0) - old.get(k, 0) for k in ("requests", "prompt_tokens", "completion_tokens")}
        if delta["requests"] >= want_requests or time.monotonic() > deadline:
            time.sleep(0.2)  # a surplus record (a failed attempt) would show up now too
            row = usage_rows(gw).get(key, {})
            return {k: row.get(k, 0) - old.get(k, 0) for k in ("requests", "prompt_tokens", "completion_tokens")}
        time.sleep(0.1)


def reset(mocks: dict[str, MockUpstream]) -> None:
    for m in mocks.values():
        m.reset()


def log_paths(mocks: dict[str, MockUpstream]) -> None:
    for name, m in mocks.items():
        print(f"{name} mock saw: {m.paths()}")


@pytest.mark.parametrize("model", list(CASES))
def test_print_mode_say_hi(tenant_gateway: Gateway, mocks: dict[str, MockUpstream], tmp_path: pathlib.Path,
                           model: str) -> None:
    reset(mocks)
    flavor, upstream_model = CASES[model]
    mocks[flavor].default_answer = Answer(text=["Hi from ", flavor, "!"], input_tokens=37, output_tokens=5)
    before = usage_rows(tenant_gateway)
    out = run_claude(tmp_path, tenant_gateway, model, "say hi")
    log_paths(mocks)

    assert out["type"] == "result" and out["subtype"] == "success", out
    assert out["is_error"] is False
    assert out["result"] == f"Hi from {flavor}!"
    assert out["num_turns"] == 1
    assert out["usage"]["input_tokens"] == 37 and out["usage"]["output_tokens"] == 5
    assert out["usage"]["cache_read_input_tokens"] == 0 and out["usage"]["cache_creation_input_tokens"] == 0
    [(used_model, mu)] = out["modelUsage"].items()
    assert used_model == model
    assert (mu["inputTokens"], mu["outputTokens"]) == (37, 5)
    assert isinstance(out["total_cost_usd"], (int, float)) and out["total_cost_usd"] >= 0
    if flavor == "anthropic":
        assert out["total_cost_usd"] > 0, "Claude Code prices a model it knows from the reported usage"

    chats = mocks[flavor].chat_requests()
    assert chats, "the upstream was called"
    assert all(r.json["model"] == upstream_model for r in chats)
    for other, m in mocks.items():
        if other != flavor:
            assert m.chat_requests() == [], f"{other} mock got {m.paths()}"
    first: Recorded = chats[0]
    if flavor == "anthropic":
        assert first.json["stream"] is True
        assert "claude-code-20250219" in first.headers.get("anthropic-beta", ""), "beta header forwarded"
        assert first.headers.get("anthropic-version") == "2023-06-01"
        assert first.headers.get("x-api-key") == "sk-ant-upstream-test"
        assert "authorization" not in first.headers, "the tenant token is not forwarded"
        assert first.json["system"][0]["text"].startswith("x-anthropic-billing-header:"), "pass-through body"
    else:
        sent = json.dumps(first.json)
        assert "x-anthropic-billing-header" not in sent, "attribution block stripped when translating"
        assert KEY not in sent and KEY not in json.dumps(first.headers)
        assert any(m["role"] == "system" for m in first.json["messages"])
        assert "say hi" in sent
    assert len(chats) == 1, f"one upstream call for one turn, got {len(chats)}"

    key = (flavor, upstream_model)  # the ledger keeps the upstream model
    delta = ledger_delta(tenant_gateway, before, key, len(chats))
    assert delta == {"requests": len(chats), "prompt_tokens": 37 * len(chats),
                     "completion_tokens": 5 * len(chats)}, \
        f"one ledger record per upstream call, none for failed attempts: {delta} ({usage_rows(tenant_gateway)})"


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "openai/gpt-4o-mini", "ollama/llama3.2"])
def test_print_mode_tool_round_trip(tenant_gateway: Gateway, mocks: dict[str, MockUpstream],
                                    tmp_path: pathlib.Path, model: str) -> None:
    """The mock answers first with a `Read` tool call (allowed by --allowedTools), then with text: Claude Code
    runs the tool and sends the file's content back as a tool_result."""
    reset(mocks)
    flavor, _ = CASES[model]
    work = tmp_path / "work"
    work.mkdir()
    note = work / "note.txt"
    note.write_text("the secret word is pineapple-42\n")
    call_id = {"anthropic": "toolu_01ReadNote", "openai": "call_ReadNote1", "ollama": "call_readnote"}[flavor]
    mocks[flavor].enqueue(Reply(answer=Answer(text=["Let me read it."],
                                              tool_calls=[ToolCall(call_id, "Read", {"file_path": str(note)})])))
    mocks[flavor].default_answer = Answer(text=["The word is pineapple-42."])
    out = run_claude(tmp_path, tenant_gateway, model, "What is the secret word in note.txt?",
                     "--allowedTools", "Read", "--max-turns", "3")
    log_paths(mocks)
    assert out["is_error"] is False, out
    assert out["result"] == "The word is pineapple-42."
    assert out["num_turns"] == 2
    chats = mocks[flavor].chat_requests()
    assert len(chats) == 2, [r.path for r in chats]
    second = chats[1].json["messages"]
    if flavor == "anthropic":
        results = [b for m in second if m["role"] == "user" and isinstance(m["content"], list)
                   for b in m["content"] if b.get("type") == "tool_result"]
        assert [r["tool_use_id"] for r in results] == [call_id]
        assert "pineapple-42" in json.dumps(results[0]["content"])
        uses = [b for m in second if m["role"] == "assistant" for b in m["content"] if b.get("type") == "tool_use"]
        assert uses and uses[0]["id"] == call_id and uses[0]["input"] == {"file_path": str(note)}
    else:
        tool_msgs = [m for m in second if m["role"] == "tool"]
        assert len(tool_msgs) == 1 and "pineapple-42" in json.dumps(tool_msgs[0]["content"])
        if flavor == "openai":
            assert tool_msgs[0]["tool_call_id"] == call_id
        assistant = [m for m in second if m["role"] == "assistant" and m.get("tool_calls")]
        assert assistant and assistant[0]["tool_calls"][0]["function"]["name"] == "Read"
