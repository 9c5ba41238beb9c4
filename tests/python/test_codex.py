"""End-to-end tests with Codex CLI itself (npm `@openai/codex`, pinned in tests/node/package.json and installed by
scripts/test into tests/node/node_modules; the native binary ships in the registry package) in non-interactive
`codex exec` mode against the gateway and the mock upstreams.

Codex is configured through a temporary `CODEX_HOME/config.toml`: a model provider `aggregator` with
`base_url = "<gateway>/v1"`, `wire_api = "responses"` and `env_key = "AGGREGATOR_API_KEY"` (the tenant key),
plugins, apps, update checks, analytics and OTel off, and run as `codex exec --skip-git-repo-check --json
--sandbox read-only --ephemeral -o <file> "say hi"` in a temporary HOME, bounded by a timeout. No network
besides loopback.

Codex version used: 0.171.0 (codex-cli, linux-x64 musl binary from `@openai/codex-linux-x64`).

What it called (seen by the mocks, the gateway's ledger and a direct run against the OpenAI mock):
- exactly one streamed `POST /v1/responses` per turn; no `GET /v1/models`, no `/v1/responses/compact`, no
  retrieval endpoints. Headers: `originator: codex_exec`, `user-agent: codex_exec/0.171.0 (…)`,
  `x-codex-beta-features`, `x-codex-turn-metadata`, `x-codex-window-id`, `session-id`, `thread-id`,
  `x-client-request-id`, `accept-encoding: zstd,gzip`.
- The body: `model`, `instructions`-free `input` (two `developer` messages, two `user` messages), `tools`
  (function tools `exec_command`, `write_stdin`, `request_user_input`, `view_image`, `get_goal`,
  `create_goal`, `update_goal`, a `namespace` tool `multi_agent_v1` with five functions, and the hosted
  `web_search` tool), `tool_choice: "auto"`, `parallel_tool_calls: true`, `reasoning: {summary: "auto"}`,
  `store: false`, `stream: true`, `include: ["reasoning.encrypted_content"]`, `prompt_cache_key` and
  `client_metadata`.
- It needs the terminal `response.completed` with usage (it reports it in `turn.completed`).

Gateway fix found by these tests: Codex declares the hosted `web_search` tool on every turn, so every Codex
turn on a translated backend (`anthropic/…`, `ollama/…`) was a 400 `param: tools[8].type`. The gateway now
drops `web_search` tools and `web_search_call` items for Codex (recognised by `originator`/`user-agent`
`codex_…`) and reports `x-gateway-dropped-params: web_search`; other clients still get the 400. Regression
test: `codex_web_search_tool_is_dropped_on_translated_backends` in tests/tests/openai_surface.rs.
On OpenAI (pass-through) the body reaches the upstream untouched, `web_search` included.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import time
from typing import Any

import httpx
import pytest

from conftest import REPO, TENANT_KEYS, Gateway
from mock_upstream import RESPONSES_PATH, Answer, MockUpstream


def codex_binary() -> pathlib.Path | None:
    env = os.environ.get("CODEX_BIN")
    if env:
        return pathlib.Path(env).resolve()  # codex runs in a temporary working directory
    p = REPO / "tests" / "node" / "node_modules" / ".bin" / "codex"
    return p if p.exists() else None


CODEX = codex_binary()
if CODEX is None:
    pytest.skip("Codex CLI is not installed: run `npm ci` in tests/node (scripts/test does when node and npm are "
                "present) or set CODEX_BIN", allow_module_level=True)

KEY = TENANT_KEYS["codex"]
TIMEOUT_S = 120
# model flag -> (mock flavor, path the mock receives, model the upstream receives)
CASES = {
    "gpt-4o-mini": ("openai", RESPONSES_PATH, "gpt-4o-mini"),
    "openai/gpt-4o-mini": ("openai", RESPONSES_PATH, "gpt-4o-mini"),
    "anthropic/claude-sonnet-4-5": ("anthropic", "/v1/messages", "claude-sonnet-4-5"),
    "ollama/llama3.2": ("ollama", "/api/chat", "llama3.2"),
}


def write_config(home: pathlib.Path, gw: Gateway, model: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f'''
model = "{model}"
model_provider = "aggregator"
check_for_update_on_startup = false

[model_providers.aggregator]
name = "AI Aggregator"
base_url = "{gw.url}/v1"
env_key = "AGGREGATOR_API_KEY"
wire_api = "responses"

[features]
plugins = false
remote_plugin = false
apps = false
in_app_updates = false

[analytics]
enabled = false

[otel]
exporter = "none"
''')


def run_codex(tmp: pathlib.Path, gw: Gateway, model: str, prompt: str) -> dict[str, Any]:
    home, codex_home, work = tmp / "home", tmp / "home" / ".codex", tmp / "work"
    work.mkdir(parents=True, exist_ok=True)
    write_config(codex_home, gw, model)
    last = tmp / "last-message.txt"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI", "CODEX", "AZURE", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy",
                                "https_proxy", "ALL_PROXY", "all_proxy"))}
    env.update({"HOME": str(home), "CODEX_HOME": str(codex_home), "AGGREGATOR_API_KEY": KEY,
                "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": str(home / ".cache"),
                "NO_PROXY": "127.0.0.1,localhost", "RUST_LOG": "warn", "NO_COLOR": "1"})
    cmd = [str(CODEX), "exec", "--skip-git-repo-check", "--json", "--sandbox", "read-only", "--ephemeral",
           "--color", "never", "-o", str(last), prompt]
    try:
        p = subprocess.run(cmd, env=env, cwd=work, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"codex did not finish within {TIMEOUT_S} s: {e.stdout!r} {e.stderr!r}") from None
    stdout, stderr = p.stdout.decode(), p.stderr.decode()
    assert p.returncode == 0, f"codex exited {p.returncode}:\n{stdout[-3000:]}\n{stderr[-3000:]}"
    events = [json.loads(line) for line in stdout.splitlines() if line.strip().startswith("{")]
    return {"events": events, "stderr": stderr, "last": last.read_text() if last.exists() else None}


def usage_rows(gw: Gateway) -> dict[tuple[str, str], dict]:
    r = httpx.get(gw.url + "/v1/usage?group_by=provider,model", headers={"authorization": f"Bearer {KEY}"},
                  timeout=10)
    assert r.status_code == 200, r.text
    return {(row["provider"], row["model"]): row for row in r.json()["data"]}


def ledger_delta(gw: Gateway, before: dict, key: tuple[str, str], want_requests: int) -> dict:
    """Waits (bounded: the ledger writes asynchronously) for `want_requests` new records under `key`."""
    fields = ("requests", "prompt_tokens", "completion_tokens")
    deadline = time.monotonic() + 15
    while True:
        row, old = usage_rows(gw).get(key, {}), before.get(key, {})
        if row.get("requests", 0) - old.get("requests", 0) >= want_requests or time.monotonic() > deadline:
            time.sleep(0.3)  # a surplus record (a failed attempt) would show up now too
            row = usage_rows(gw).get(key, {})
            return {k: row.get(k, 0) - old.get(k, 0) for k in fields}
        time.sleep(0.1)


@pytest.mark.parametrize("model", list(CASES))
def test_codex_exec_say_hi(tenant_gateway: Gateway, mocks: dict[str, MockUpstream], tmp_path: pathlib.Path,
                           model: str) -> None:
    for m in mocks.values():
        m.reset()
    flavor, path, upstream_model = CASES[model]
    mocks[flavor].default_answer = Answer(text=["Hi from ", flavor, "!"], input_tokens=37, output_tokens=5)
    before = usage_rows(tenant_gateway)
    out = run_codex(tmp_path, tenant_gateway, model, "say hi")
    for name, m in mocks.items():
        print(f"{name} mock saw: {m.paths()}")

    events = out["events"]
    types = [e["type"] for e in events]
    assert "turn.failed" not in types and "error" not in types, events
    messages = [e["item"]["text"] for e in events
                if e["type"] == "item.completed" and e["item"].get("type") == "agent_message"]
    assert messages == [f"Hi from {flavor}!"], events
    assert out["last"].strip() == f"Hi from {flavor}!", "the -o file holds the final message"
    [done] = [e for e in events if e["type"] == "turn.completed"]
    assert (done["usage"]["input_tokens"], done["usage"]["output_tokens"]) == (37, 5), done
    assert "github.com" not in out["stderr"] and "chatgpt.com" not in out["stderr"], \
        f"no traffic beyond loopback was attempted:\n{out['stderr'][-2000:]}"

    sent = mocks[flavor].requests_to(path)
    assert len(sent) == 1, f"one upstream call for one turn: {mocks[flavor].paths()}"
    body, headers = sent[0].json, sent[0].headers
    assert body["model"] == upstream_model and body["stream"] is True
    assert KEY not in json.dumps(body) and KEY not in json.dumps(headers), "the tenant key is not forwarded"
    for other, m in mocks.items():
        if other != flavor:
            assert m.requests == [], f"{other} mock got {m.paths()}"
    if flavor == "openai":
        # Pass-through: Codex's own body, untouched but for the model.
        assert headers.get("authorization") == "Bearer sk-upstream-openai-test"
        assert body["store"] is False and body["include"] == ["reasoning.encrypted_content"]
        assert any(t["type"] == "web_search" for t in body["tools"])
        assert any(t["type"] == "namespace" for t in body["tools"])
        assert "say hi" in json.dumps(body["input"])
    else:
        names = [t.get("name") or t.get("function", {}).get("name") for t in body["tools"]]
        assert "exec_command" in names, names
        assert any(n.startswith("multi_agent_v1__") for n in names), "namespace tools flattened"
        assert "web_search" not in json.dumps(body["tools"]), "Codex's hosted web_search tool is dropped"
        assert "say hi" in json.dumps(body)

    delta = ledger_delta(tenant_gateway, before, (flavor, upstream_model), 1)
    assert delta == {"requests": 1, "prompt_tokens": 37, "completion_tokens": 5}, \
        f"one ledger record for the turn: {delta}"
