"""A 10,000-line mixed-provider batch (OpenAI, Anthropic, Ollama mocks) through the official `openai` SDK,
on the embedded SQLite store or on Postgres (two replicas, one killed mid-batch), with exact counts and
exact ledger totals checked at the end. Prints wall time and lines/s next to the mock's own ceiling
(the same mocks hammered directly at the same concurrency).

Usage (from the repository root, after `cargo build`):
    .venv/bin/python bench/batches/batch_10k.py [--store sqlite|postgres] [--lines 10000] [--lane 16]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = pathlib.Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[2] / "tests" / "python"))

from mock_upstream import MockUpstream  # noqa: E402
from test_batches import PG_BASE, batch_rows, chat_line, jsonl, read_lines, start, upload, wait_for, finished  # noqa: E402

MODELS = ["openai/gpt-4o-mini", "anthropic/claude-sonnet-4-5", "ollama/llama3.2"]
PATHS = {"openai": ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}]}),
         "anthropic": ("/v1/messages", {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "x"}]}),
         "ollama": ("/api/chat", {"model": "m", "stream": False, "messages": [{"role": "user", "content": "x"}]})}


def mock_ceiling(mocks: dict[str, MockUpstream], threads: int, seconds: float = 3.0) -> float:
    """Requests/s the three mocks serve when called directly, `threads` at a time, round-robin."""
    stop = time.monotonic() + seconds
    count = [0]
    lock = threading.Lock()

    def worker(i: int) -> None:
        flavor = list(PATHS)[i % 3]
        path, body = PATHS[flavor]
        base = f"http://127.0.0.1:{mocks[flavor].port}"
        data = json.dumps(body).encode()
        n = 0
        while time.monotonic() < stop:
            req = urllib.request.Request(base + path, data=data, headers={"content-type": "application/json"})
            try:
                urllib.request.urlopen(req, timeout=10).read()
                n += 1
            except OSError:
                pass  # the mock's listen backlog overflowed: not a served request
        with lock:
            count[0] += n

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return count[0] / seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--lines", type=int, default=10_000)
    ap.add_argument("--lane", type=int, default=16, help="lane concurrency per provider and replica")
    args = ap.parse_args()
    mocks = {f: MockUpstream(f) for f in ("openai", "anthropic", "ollama")}
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="batch10k-"))
    lanes = f"  lane_concurrency: {args.lane}\n"
    schema = None
    replicas = []
    try:
        if args.store == "postgres":
            schema = f"batch10k_{os.getpid()}"
            subprocess.run(["psql", PG_BASE, "-q", "-c", f"CREATE SCHEMA {schema}"], check=True, timeout=30)
            url = f"{PG_BASE}?options=-c%20search_path%3D{schema}"
            for name in ("a", "b"):
                (tmp / name).mkdir()
                g = start(tmp / name, mocks, lanes, url, name=name)
                g.pg_schema = schema
                replicas.append(g)
        else:
            replicas.append(start(tmp, mocks, lanes))
        g = replicas[-1]
        c = g.client(timeout=120)
        lines = [chat_line(f"l{i}", MODELS[i % 3], f"line {i}") for i in range(args.lines)]
        f = upload(c, jsonl(lines))
        t0 = time.monotonic()
        b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        killed = False
        if len(replicas) == 2:
            wait_for(c, b.id, lambda x: x.request_counts.completed >= args.lines // 4, timeout=600)
            replicas[0].proc.send_signal(signal.SIGKILL)
            replicas[0].proc.wait(timeout=10)
            killed = True
        done = wait_for(c, b.id, finished, timeout=1800)
        wall = time.monotonic() - t0
        rc = done.request_counts
        assert done.status == "completed", done
        assert (rc.total, rc.completed, rc.failed) == (args.lines, args.lines, 0), rc
        out = read_lines(c, done.output_file_id)
        assert sorted(o["custom_id"] for o in out) == sorted(line["custom_id"] for line in lines)
        rows = batch_rows(g, b.id)
        ids = [r[0] for r in rows]
        assert len(ids) == len(set(ids)) == args.lines, f"{len(ids)} ledger rows, {len(set(ids))} distinct"
        tokens = sum(int(r[3]) + int(r[4]) for r in rows)
        assert tokens == done.usage.total_tokens, (tokens, done.usage)
        upstream_calls = sum(len(m.chat_requests()) for m in mocks.values())
        ceiling = mock_ceiling(mocks, threads=3 * args.lane)
        print(json.dumps({
            "store": args.store, "replicas": len(replicas), "replica_killed_mid_batch": killed,
            "lines": args.lines, "lane_concurrency": args.lane, "wall_s": round(wall, 2),
            "lines_per_s": round(args.lines / wall, 1), "mock_ceiling_rps": round(ceiling, 1),
            "ledger_rows": len(ids), "ledger_tokens": tokens, "upstream_calls": upstream_calls,
            "duplicate_dispatches": upstream_calls - args.lines,
        }))
    finally:
        for r in replicas:
            r.stop()
        for m in mocks.values():
            m.close()
        if schema:
            subprocess.run(["psql", PG_BASE, "-q", "-c", f"DROP SCHEMA IF EXISTS {schema} CASCADE"], timeout=30)


if __name__ == "__main__":
    main()
