"""Issue 14: the Files and Batch APIs, driven by the official `openai` SDK against the gateway binary and the
mock upstreams (OpenAI, Anthropic, Ollama), covering the cases of shared/research/batches.md §8.

Each gateway here runs with two tenants (`acme`, `beta`), a fast worker poll and short leases; the ledger is
read straight from its store (the embedded SQLite file, or Postgres with `psql`) to prove exactly-once
billing. Every wait is bounded."""

from __future__ import annotations

import io
import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable, Iterator

import httpx
import openai
import pytest

import openapi_schemas
from conftest import free_port, gateway_binary, providers_yaml
from mock_upstream import MockUpstream

ACME_KEY = "sk-acme-batches-0001"
BETA_KEY = "sk-beta-batches-0002"
PG_BASE = os.environ.get("BATCH_TEST_PG", "postgres://postgres@127.0.0.1:5432/test")
MODELS = {"openai": "openai/gpt-4o-mini", "anthropic": "anthropic/claude-sonnet-4-5", "ollama": "ollama/llama3.2"}


@dataclass
class Gw:
    url: str
    proc: subprocess.Popen
    log: pathlib.Path
    data: pathlib.Path
    pg_schema: str | None = None

    def client(self, key: str = ACME_KEY, timeout: float = 30) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=timeout)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def rss_hwm_kb(self) -> int:
        for line in pathlib.Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0


def config(port: int, data: pathlib.Path, mocks: dict[str, MockUpstream], batches: str = "") -> str:
    return f"""
listen: 127.0.0.1:{port}
models_cache_ttl_secs: 0
ledger:
  data_dir: {data}
tenants:
  - id: acme
    api_keys: ["{ACME_KEY}"]
  - id: beta
    api_keys: ["{BETA_KEY}"]
{providers_yaml(mocks)}batches:
  poll_ms: 50
  lease_secs: 3
{batches}
"""


def start(tmp: pathlib.Path, mocks: dict[str, MockUpstream], batches: str = "", database_url: str | None = None,
          data: pathlib.Path | None = None, name: str = "gw") -> Gw:
    port = free_port()
    data = data or tmp / "data"
    cfg = tmp / f"{name}-{port}.yaml"
    cfg.write_text(config(port, data, mocks, batches))
    log = tmp / f"{name}-{port}.log"
    env = {k: v for k, v in os.environ.items()
           if k not in ("API_PORT", "DATABASE_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OLLAMA_URL")}
    env.setdefault("RUST_LOG", "info")
    if database_url:
        env["DATABASE_URL"] = database_url
    with log.open("wb") as out:
        proc = subprocess.Popen([str(gateway_binary()), "--config", str(cfg)], stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=tmp)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            urllib.request.urlopen(url + "/healthz", timeout=2).read()
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"gateway did not answer within 30 s:\n{log.read_text()[-4000:]}")
            time.sleep(0.1)
    return Gw(url, proc, log, data)


@pytest.fixture(scope="module")
def gw(mocks: dict[str, MockUpstream], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gw]:
    g = start(tmp_path_factory.mktemp("batches"), mocks)
    yield g
    g.stop()


@pytest.fixture(autouse=True)
def _reset(mocks: dict[str, MockUpstream]) -> None:
    for m in mocks.values():
        m.reset()
        m.slow_secs = 0.3


def jsonl(lines: list[dict]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def chat_line(custom_id: str, model: str, content: str = "Say hello") -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": content}]}}


def upload(c: openai.OpenAI, data: bytes, name: str = "in.jsonl", purpose: str = "batch", **kw):
    return c.files.create(file=(name, io.BytesIO(data)), purpose=purpose, **kw)


def wait_for(c: openai.OpenAI, batch_id: str, done: Callable[[object], bool], timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        b = c.batches.retrieve(batch_id)
        if done(b):
            return b
        assert time.monotonic() < deadline, f"batch {batch_id} still {b.status} after {timeout} s: {b}"
        time.sleep(0.1)


def finished(b) -> bool:
    return b.status in ("completed", "failed", "expired", "cancelled")


def run_batch(c: openai.OpenAI, lines: list[dict], timeout: float = 60, **kw):
    f = upload(c, jsonl(lines))
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h", **kw)
    return wait_for(c, b.id, finished, timeout)


def read_lines(c: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(line) for line in c.files.content(file_id).content.splitlines() if line.strip()]


def ledger_rows(g: Gw, where: str, params: tuple = ()) -> list[tuple]:
    """Rows `(request_id, tenant, status, prompt_tokens, completion_tokens)` of the ledger."""
    sql = f"SELECT request_id, tenant, status, prompt_tokens, completion_tokens FROM ledger_records WHERE {where}"
    if g.pg_schema:
        q = sql.replace("?", "'{}'").format(*params)
        out = subprocess.run(["psql", PG_BASE, "-At", "-F", "\t", "-c", f"SET search_path TO {g.pg_schema}; {q}"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        return [tuple(l.split("\t")) for l in out.splitlines() if l and l != "SET"]
    con = sqlite3.connect(f"file:{g.data / 'ledger.sqlite3'}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def batch_rows(g: Gw, batch_id: str) -> list[tuple]:
    return ledger_rows(g, "batch_id = ?", (batch_id,))


# ------------------------------------------------------------------------------------------ files

def test_file_round_trip_object_and_delete(gw: Gw) -> None:
    c = gw.client()
    data = jsonl([chat_line("a", MODELS["openai"])]) + "é ünïcode\n".encode()
    f = upload(c, data)
    openapi_schemas.validate("OpenAIFile", f.model_dump(exclude_unset=True))
    assert (f.object, f.bytes, f.filename, f.purpose, f.status) == ("file", len(data), "in.jsonl", "batch", "processed")
    assert f.expires_at == f.created_at + 2_592_000
    assert c.files.wait_for_processing(f.id, poll_interval=0.1, max_wait_seconds=5).status == "processed"
    assert c.files.retrieve(f.id).id == f.id
    assert c.files.content(f.id).content == data
    short = upload(c, b"x\n", expires_after={"anchor": "created_at", "seconds": 3600})
    assert short.expires_at == short.created_at + 3600
    other = upload(c, b"\x00\x01binary", name="blob.bin", purpose="user_data")
    assert other.purpose == "user_data" and other.expires_at is None
    assert c.files.content(other.id).content == b"\x00\x01binary"
    d = c.files.delete(f.id)
    assert d.deleted is True and d.id == f.id
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve(f.id)
    with pytest.raises(openai.NotFoundError):
        c.files.content(f.id)


def test_batch_upload_rules(gw: Gw) -> None:
    c = gw.client()
    with pytest.raises(openai.BadRequestError, match="Must be .jsonl"):
        upload(c, b"hello\n", name="notes.txt")
    with pytest.raises(openai.BadRequestError):
        upload(c, b"x\n", purpose="nonsense")
    big = b"x" * (200 * 1024 * 1024 + 1)
    with pytest.raises(openai.BadRequestError):
        upload(c, big)


def test_large_file_byte_identical_with_bounded_rss(gw: Gw, tmp_path: pathlib.Path) -> None:
    c = gw.client(timeout=300)
    path = tmp_path / "big.jsonl"
    block = os.urandom(1 << 20)
    with path.open("wb") as out:
        for _ in range(150):
            out.write(block)
    before = gw.rss_hwm_kb()
    with path.open("rb") as fh:
        f = c.files.create(file=("big.jsonl", fh), purpose="batch")
    assert f.bytes == 150 << 20
    resp = c.files.content(f.id)
    got = resp.content
    assert len(got) == 150 << 20 and got == path.read_bytes()
    grown_mb = (gw.rss_hwm_kb() - before) / 1024
    # Streamed both ways: the gateway's peak memory grows by far less than the file.
    assert grown_mb < 64, f"gateway peak RSS grew by {grown_mb:.0f} MB for a 150 MB file"
    c.files.delete(f.id)


def test_files_pagination_terminates(gw: Gw) -> None:
    c = gw.client(BETA_KEY)
    ids = [upload(c, f"{i}\n".encode(), name=f"p{i}.jsonl").id for i in range(5)]
    other = upload(c, b"u", name="u.bin", purpose="user_data").id
    page = c.files.list(limit=2, purpose="batch")
    assert len(page.data) == 2 and page.has_more
    seen = [f.id for f in c.files.list(limit=2, purpose="batch")]
    assert seen[:5] == ids[::-1], "newest first, each once"
    assert other not in seen
    asc = [f.id for f in c.files.list(limit=2, purpose="batch", order="asc")]
    assert asc[-5:] == ids
    for i in ids + [other]:
        c.files.delete(i)


# ------------------------------------------------------------------------------------------ batches

def test_mixed_provider_batch_completes_and_bills_each_line_once(gw: Gw, mocks: dict[str, MockUpstream]) -> None:
    c = gw.client()
    lines = [chat_line(f"{p}-{i}", MODELS[p]) for p in MODELS for i in range(5)]
    b = run_batch(c, lines, metadata={"k": "v"})
    openapi_schemas.validate("Batch", b.model_dump(exclude_unset=True))
    assert b.status == "completed", b
    assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == (15, 15, 0)
    assert b.in_progress_at <= b.finalizing_at <= b.completed_at
    assert b.metadata == {"k": "v"} and b.error_file_id is None and b.output_file_id
    assert b.usage.input_tokens == 15 * 11 and b.usage.output_tokens == 15 * 6
    out = read_lines(c, b.output_file_id)
    assert sorted(o["custom_id"] for o in out) == sorted(line["custom_id"] for line in lines)
    request_ids = set()
    for o in out:
        assert o["error"] is None and o["id"] and o["response"]["status_code"] == 200
        request_ids.add(o["response"]["request_id"])
        body = o["response"]["body"]
        openapi_schemas.completion(body)
        openai.types.chat.ChatCompletion.model_validate(body)
        assert body["choices"][0]["message"]["content"] == "Hello there!"
    assert len(request_ids) == 15
    for p in MODELS:
        assert len(mocks[p].chat_requests()) == 5
    rows = batch_rows(gw, b.id)
    assert {r[0] for r in rows} == request_ids, "one ledger row per line, keyed by response.request_id"
    assert all(r[1] == "acme" and r[2] == "ok" and int(r[3]) == 11 and int(r[4]) == 6 for r in rows)
    # Reads never bill.
    for _ in range(7):
        c.batches.retrieve(b.id)
        c.batches.list(limit=5)
        c.files.content(b.output_file_id)
    assert len(batch_rows(gw, b.id)) == 15
    assert sum(len(mocks[p].chat_requests()) for p in MODELS) == 15


def test_responses_and_completions_batches_over_every_provider(gw: Gw) -> None:
    """The other endpoints the gateway routes run inside batches too (issue 14): Responses lines pass
    through to OpenAI and are translated for Anthropic and Ollama; legacy completions are translated for
    all. One ledger row per line, as for chat."""
    c = gw.client()
    for endpoint, body_of, check in [
        ("/v1/responses", lambda m: {"model": m, "input": "Say hello"},
         lambda b: b["object"] == "response" and b["status"] == "completed"),
        ("/v1/completions", lambda m: {"model": m, "prompt": "Say hello", "max_tokens": 20},
         lambda b: b["object"] == "text_completion" and b["choices"][0]["text"] == "Hello there!"),
    ]:
        lines = [{"custom_id": f"{p}-{endpoint}", "method": "POST", "url": endpoint, "body": body_of(MODELS[p])}
                 for p in MODELS]
        f = upload(c, jsonl(lines))
        b = c.batches.create(input_file_id=f.id, endpoint=endpoint, completion_window="24h")
        b = wait_for(c, b.id, finished, 60)
        assert b.status == "completed", b
        assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == (3, 3, 0), endpoint
        out = read_lines(c, b.output_file_id)
        assert len(out) == 3
        for o in out:
            assert o["response"]["status_code"] == 200, o
            assert check(o["response"]["body"]), o
        assert len(batch_rows(gw, b.id)) == 3, endpoint
    # Embeddings are not executed in batches yet: refused at create time, not silently.
    f = upload(c, jsonl([{"custom_id": "e", "method": "POST", "url": "/v1/embeddings",
                          "body": {"model": MODELS["openai"], "input": "x"}}]))
    with pytest.raises(openai.BadRequestError):
        c.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h")


def test_per_line_failures_degrade_gracefully(gw: Gw) -> None:
    c = gw.client()
    lines = [chat_line("ok-1", MODELS["openai"]), chat_line("ok-2", MODELS["ollama"]),
             chat_line("overloaded", "anthropic/claude-sonnet-4-5-fail529"),
             chat_line("unknown", "no-such-model-xyz")]
    b = run_batch(c, lines)
    assert b.status == "completed"
    assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == (4, 2, 2)
    errs = {e["custom_id"]: e for e in read_lines(c, b.error_file_id)}
    assert set(errs) == {"overloaded", "unknown"}
    assert errs["unknown"]["response"]["status_code"] == 404
    assert errs["unknown"]["response"]["body"]["error"]["code"] == "model_not_found"
    assert errs["overloaded"]["response"]["status_code"] in (503, 529)
    for e in errs.values():
        openapi_schemas.error(e["response"]["body"])
    assert {o["custom_id"] for o in read_lines(c, b.output_file_id)} == {"ok-1", "ok-2"}


@pytest.mark.parametrize("case", ["bad_json", "duplicate", "method", "url", "stream", "missing_custom_id"])
def test_validation_failures_fail_the_batch_without_calls_or_ledger(gw: Gw, mocks: dict[str, MockUpstream],
                                                                   case: str) -> None:
    c = gw.client()
    good = [chat_line(f"l{i}", MODELS["openai"]) for i in range(4)]
    raw = [json.dumps(line) for line in good]
    bad_line = 3
    if case == "bad_json":
        raw[2] = '{"custom_id": "l2", "method": "POST",'
    elif case == "duplicate":
        raw[2] = json.dumps(chat_line("l0", MODELS["openai"]))
    elif case == "method":
        raw[2] = json.dumps({**good[2], "method": "GET"})
    elif case == "url":
        raw[2] = json.dumps({**good[2], "url": "/v1/embeddings"})
    elif case == "stream":
        raw[2] = json.dumps({**good[2], "body": {**good[2]["body"], "stream": True}})
    else:
        raw[2] = json.dumps({k: v for k, v in good[2].items() if k != "custom_id"})
    f = upload(c, ("\n".join(raw) + "\n").encode())
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    b = wait_for(c, b.id, finished)
    assert b.status == "failed" and b.failed_at is not None
    assert b.errors.data[0].line == bad_line, b.errors
    assert b.output_file_id is None and b.error_file_id is None
    assert sum(len(m.chat_requests()) for m in mocks.values()) == 0
    assert batch_rows(gw, b.id) == []


def test_too_many_lines_fails(gw: Gw, mocks: dict[str, MockUpstream]) -> None:
    c = gw.client()
    line = json.dumps(chat_line("x", MODELS["openai"]))
    data = "".join(line.replace('"x"', f'"x{i}"') + "\n" for i in range(50_001)).encode()
    b = run_batch_raw(c, data)
    assert b.status == "failed" and b.errors.data[0].line == 50_001
    assert sum(len(m.chat_requests()) for m in mocks.values()) == 0


def run_batch_raw(c: openai.OpenAI, data: bytes):
    f = upload(c, data)
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    return wait_for(c, b.id, finished, 120)


def test_create_errors(gw: Gw) -> None:
    c = gw.client()
    f = upload(c, jsonl([chat_line("a", MODELS["openai"])]))
    u = upload(c, b"{}", name="x.json", purpose="user_data")
    with pytest.raises(openai.NotFoundError):
        c.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.BadRequestError):
        c.batches.create(input_file_id=u.id, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.BadRequestError):
        c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="1h")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        c.batches.create(input_file_id=f.id, endpoint="/v1/videos", completion_window="24h")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                         metadata={f"k{i}": "v" for i in range(17)})


def test_batches_list_pages_newest_first(gw: Gw) -> None:
    c = gw.client(BETA_KEY)
    f = upload(c, jsonl([chat_line("a", MODELS["openai"])]))
    ids = [c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h").id
           for _ in range(5)]
    page = c.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    seen = [b.id for b in c.batches.list(limit=2)]
    assert seen[:5] == ids[::-1] and len(seen) == len(set(seen))
    for i in ids:
        wait_for(c, i, finished)


def test_idempotent_create(gw: Gw) -> None:
    c = gw.client()
    f = upload(c, jsonl([chat_line("a", MODELS["openai"])]))
    args = dict(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                extra_headers={"Idempotency-Key": f"key-{f.id}"})
    a = c.batches.create(**args)
    b = c.batches.create(**args)
    assert a.id == b.id
    c2 = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert c2.id != a.id
    wait_for(c, a.id, finished)
    wait_for(c, c2.id, finished)


def test_output_expires_after(gw: Gw) -> None:
    c = gw.client()
    b = run_batch(c, [chat_line("a", MODELS["openai"])], output_expires_after={"anchor": "created_at", "seconds": 7200})
    out = c.files.retrieve(b.output_file_id)
    assert out.expires_at == out.created_at + 7200 and out.purpose == "batch_output"


def test_tenant_isolation(gw: Gw) -> None:
    a, bclient = gw.client(), gw.client(BETA_KEY)
    f = upload(a, jsonl([chat_line("a", MODELS["openai"])]))
    b = run_batch(a, [chat_line("a", MODELS["openai"])])
    for call in (lambda: bclient.files.retrieve(f.id), lambda: bclient.files.content(f.id),
                 lambda: bclient.files.delete(f.id), lambda: bclient.batches.retrieve(b.id),
                 lambda: bclient.batches.cancel(b.id), lambda: bclient.files.content(b.output_file_id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert f.id not in {x.id for x in bclient.files.list()}
    assert b.id not in {x.id for x in bclient.batches.list()}
    with pytest.raises(openai.NotFoundError):
        bclient.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.BadRequestError):
        bclient.files.list(after=f.id)
    assert a.files.retrieve(f.id).id == f.id


def test_cancel(gw: Gw, mocks: dict[str, MockUpstream]) -> None:
    c = gw.client()
    mocks["openai"].slow_secs = 0.2
    lines = [chat_line(f"s{i}", "openai/gpt-4o-mini-slow") for i in range(200)]
    f = upload(c, jsonl(lines))
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_for(c, b.id, lambda x: x.status == "in_progress" and x.request_counts.completed > 0)
    cancelled = c.batches.cancel(b.id)
    assert cancelled.status in ("cancelling", "cancelled") and cancelled.cancelling_at is not None
    assert c.batches.cancel(b.id).status in ("cancelling", "cancelled"), "a second cancel is fine"
    done = wait_for(c, b.id, finished)
    assert done.status == "cancelled" and done.cancelled_at is not None
    rc = done.request_counts
    assert rc.total == 200 and rc.completed + rc.failed == 200 and 0 < rc.completed < 200
    errs = read_lines(c, done.error_file_id)
    assert all(e["error"]["code"] == "batch_cancelled" and e["response"] is None for e in errs)
    assert len(errs) == rc.failed
    assert len(read_lines(c, done.output_file_id)) == rc.completed
    assert len(batch_rows(gw, b.id)) == rc.completed, "cancelled lines are never billed"
    with pytest.raises(openai.BadRequestError):
        c.batches.cancel(run_batch(c, [chat_line("z", MODELS["openai"])]).id)


def test_pacing_under_429_with_a_concurrency_cap(mocks: dict[str, MockUpstream], tmp_path: pathlib.Path) -> None:
    g = start(tmp_path, mocks, batches="  lanes:\n    openai: 4\n")
    try:
        c = g.client()
        mocks["openai"].slow_secs = 0.05
        lines = [chat_line(f"r{i}", "openai/gpt-4o-mini-slow-rl429") for i in range(50)]
        f = upload(c, jsonl(lines))
        b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        live = c.chat.completions.create(model=MODELS["anthropic"], messages=[{"role": "user", "content": "hi"}])
        assert live.choices[0].message.content == "Hello there!", "interactive traffic still flows"
        done = wait_for(c, b.id, finished, 120)
        assert done.status == "completed" and done.request_counts.completed == 50, done.request_counts
        assert mocks["openai"].max_inflight <= 4, mocks["openai"].max_inflight
        assert all(o["response"]["status_code"] == 200 for o in read_lines(c, done.output_file_id))
        assert len(batch_rows(g, b.id)) == 50
    finally:
        g.stop()


def test_expiry(mocks: dict[str, MockUpstream], tmp_path: pathlib.Path) -> None:
    g = start(tmp_path, mocks, batches="  window_secs: 2\n  lanes:\n    openai: 1\n")
    try:
        c = g.client()
        mocks["openai"].slow_secs = 0.3
        b = run_batch(c, [chat_line(f"e{i}", "openai/gpt-4o-mini-slow") for i in range(30)])
        assert b.status == "expired" and b.expired_at is not None, b
        assert b.completion_window == "24h"
        rc = b.request_counts
        assert rc.total == 30 and rc.completed + rc.failed == 30 and rc.failed > 0
        errs = read_lines(c, b.error_file_id)
        assert {e["error"]["code"] for e in errs} == {"batch_expired"}
        assert len(read_lines(c, b.output_file_id)) == rc.completed
        assert len(batch_rows(g, b.id)) == rc.completed
    finally:
        g.stop()


def check_exactly_once(g: Gw, c: openai.OpenAI, b, n: int) -> None:
    assert b.status == "completed", b
    assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == (n, n, 0)
    out = read_lines(c, b.output_file_id)
    assert sorted(o["custom_id"] for o in out) == sorted(f"k{i}" for i in range(n)), "every line exactly once"
    rows = batch_rows(g, b.id)
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)) == n, "one ledger row per line, none twice"
    assert set(ids) == {o["response"]["request_id"] for o in out}


def test_kill_9_mid_batch_then_restart(mocks: dict[str, MockUpstream], tmp_path: pathlib.Path) -> None:
    mocks["openai"].slow_secs = 0.2
    g = start(tmp_path, mocks, batches="  lanes:\n    openai: 4\n")
    c = g.client()
    n = 60
    f = upload(c, jsonl([chat_line(f"k{i}", "openai/gpt-4o-mini-slow") for i in range(n)]))
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_for(c, b.id, lambda x: x.request_counts.completed >= 8)
    g.proc.send_signal(signal.SIGKILL)
    g.proc.wait(timeout=10)
    g2 = start(tmp_path, mocks, batches="  lanes:\n    openai: 4\n", data=g.data, name="restarted")
    try:
        c2 = g2.client()
        done = wait_for(c2, b.id, finished, 120)
        check_exactly_once(g2, c2, done, n)
        assert len(mocks["openai"].chat_requests()) >= n
    finally:
        g2.stop()


def psql(sql: str) -> None:
    subprocess.run(["psql", PG_BASE, "-q", "-c", sql], capture_output=True, timeout=30, check=True)


@pytest.fixture
def pg_schema() -> Iterator[str]:
    try:
        psql("SELECT 1")
    except (OSError, subprocess.SubprocessError):
        pytest.skip("no Postgres at 127.0.0.1:5432")
    name = f"batches_t_{os.getpid()}_{int(time.time() * 1000) % 10**9}"
    psql(f"CREATE SCHEMA {name}")
    yield name
    psql(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def test_two_replicas_on_postgres_one_killed(mocks: dict[str, MockUpstream], tmp_path: pathlib.Path,
                                             pg_schema: str) -> None:
    url = f"{PG_BASE}?options=-c%20search_path%3D{pg_schema}"
    mocks["openai"].slow_secs = 0.2
    mocks["anthropic"].slow_secs = 0.2
    lanes = "  lanes:\n    openai: 3\n    anthropic: 3\n"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = start(tmp_path / "a", mocks, lanes, url, name="a")
    bb = start(tmp_path / "b", mocks, lanes, url, name="b")
    a.pg_schema = bb.pg_schema = pg_schema
    try:
        c = a.client()
        n = 60
        models = ["openai/gpt-4o-mini-slow", "anthropic/claude-sonnet-4-5-slow"]
        f = upload(c, jsonl([chat_line(f"k{i}", models[i % 2]) for i in range(n)]))
        b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        wait_for(c, b.id, lambda x: x.request_counts.completed >= 10)
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(timeout=10)
        cb = bb.client()
        assert cb.files.content(f.id).content.count(b"\n") == n, "the input is reachable from every replica"
        done = wait_for(cb, b.id, finished, 120)
        check_exactly_once(bb, cb, done, n)
    finally:
        a.stop()
        bb.stop()


JS_DIR = pathlib.Path(__file__).resolve().parents[1] / "js"


def test_js_sdk_content_and_list_iteration(gw: Gw) -> None:
    """Case 24: the JS SDK's `files.content(id).then(r => r.text())` and `for await` over `batches.list()`."""
    if not (JS_DIR / "node_modules" / "openai").exists():
        pytest.skip("the JS SDK is not installed (cd tests/js && npm install)")
    c = gw.client()
    data = jsonl([chat_line("js", MODELS["openai"])])
    f = upload(c, data)
    made = [c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h").id
            for _ in range(3)]
    out = subprocess.run(["node", str(JS_DIR / "batches.mjs"), gw.url + "/v1", ACME_KEY, f.id],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["text"].encode() == data
    assert len(seen["ids"]) == len(set(seen["ids"])) and set(made) <= set(seen["ids"])
    assert seen["ids"] == [b.id for b in c.batches.list(limit=100)], "same order as the Python SDK, newest first"
    for i in made:
        wait_for(c, i, finished)
