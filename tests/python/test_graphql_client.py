"""GraphQL end to end (issue #15) with a client nobody here wrote: PyPI's `gql` (HTTPX transport) against the
gateway binary. An admin creates a tenant and a key through mutations, the tenant's key makes a chat
completion, and the usage the tenant sees through GraphQL equals `/v1/usage`; the tenant cannot list
tenants (`FORBIDDEN`-class error with `extensions.code`), and a wrong key is `UNAUTHENTICATED`."""

from __future__ import annotations

import time
from typing import Iterator

import httpx
import pytest
from gql import Client, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.httpx import HTTPXTransport

from conftest import Gateway, start_gateway, stop_gateway
from mock_upstream import MockUpstream

ADMIN_KEY = "admin-key-graphql-e2e-0123456789"


@pytest.fixture(scope="module")
def gw(mocks: dict[str, MockUpstream], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = start_gateway(mocks, tmp_path_factory.mktemp("graphql"), f"admin_api_key: {ADMIN_KEY}\n")
    yield g
    stop_gateway(g)


def client(gw: Gateway, key: str) -> Client:
    transport = HTTPXTransport(url=gw.url + "/graphql", headers={"X-API-Key": key}, timeout=10)
    return Client(transport=transport, fetch_schema_from_transport=False)


def test_admin_mutations_tenant_usage_and_errors(gw: Gateway) -> None:
    admin = client(gw, ADMIN_KEY)
    created = admin.execute(
        gql("mutation($id: ID!) { createTenant(input: {id: $id}) { id source disabled } }"),
        variable_values={"id": "gqlco"},
    )
    assert created["createTenant"]["id"] == "gqlco" and created["createTenant"]["disabled"] is False
    key = admin.execute(
        gql("mutation { createKey(input: {tenantId: \"gqlco\", name: \"e2e\"}) { secret key { id tenantId revoked } } }")
    )["createKey"]
    assert key["secret"].startswith("sk-") and key["key"]["tenantId"] == "gqlco" and not key["key"]["revoked"]

    # The tenant's key works for model calls and for its own view.
    r = httpx.post(gw.url + "/v1/chat/completions", headers={"authorization": f"Bearer {key['secret']}"},
                   json={"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}, timeout=10)
    assert r.status_code == 200, r.text
    tenant = client(gw, key["secret"])
    me = tenant.execute(gql("{ me { kind tenantId keyId } }"))["me"]
    assert me["kind"] == "TENANT" and me["tenantId"] == "gqlco" and me["keyId"] == key["key"]["id"]

    # Usage through GraphQL equals /v1/usage (the ledger writes asynchronously: wait for the record).
    deadline = time.monotonic() + 10
    while True:
        rest = httpx.get(gw.url + "/v1/usage", headers={"authorization": f"Bearer {key['secret']}"}, timeout=10).json()
        if rest["data"] and rest["data"][0]["requests"] == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    totals = tenant.execute(gql("{ usage { totals { requests promptTokens completionTokens costUsd } } }"))["usage"]["totals"]
    row = rest["data"][0]
    assert totals["requests"] == row["requests"] == 1
    assert totals["promptTokens"] == row["prompt_tokens"] and totals["completionTokens"] == row["completion_tokens"]

    # Rules come from the services: a tenant cannot list tenants; a wrong key is unauthenticated.
    with pytest.raises(TransportQueryError) as e:
        tenant.execute(gql("{ tenants(first: 5) { edges { node { id } } } }"))
    codes = {err.get("extensions", {}).get("code") for err in (e.value.errors or [])}
    assert codes & {"FORBIDDEN", "UNAUTHENTICATED"}, e.value.errors
    bad = httpx.post(gw.url + "/graphql", headers={"X-API-Key": "sk-wrong"}, json={"query": "{ me { kind } }"}, timeout=10)
    assert bad.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

    # Pagination runs to the end through the client.
    seen, after = [], None
    while True:
        page = admin.execute(
            gql("query($after: String) { tenants(first: 1, after: $after) { edges { node { id } } pageInfo { hasNextPage endCursor } } }"),
            variable_values={"after": after},
        )["tenants"]
        seen += [edge["node"]["id"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert "gqlco" in seen and len(seen) == len(set(seen))

    # Revoking the key through a mutation stops it.
    revoked = admin.execute(gql("mutation($id: ID!) { revokeKey(id: $id) { revoked } }"),
                            variable_values={"id": key["key"]["id"]})
    assert revoked["revokeKey"]["revoked"] is True


def test_create_job_then_poll_until_completed(gw: Gateway, mocks: dict[str, MockUpstream]) -> None:
    """A job made with `createJob` runs as a one-line batch and reaches COMPLETED with the mock's answer;
    another tenant cannot see it (NOT_FOUND), and IMAGE is refused with BAD_USER_INPUT."""
    admin = client(gw, ADMIN_KEY)
    secrets = {}
    for tenant in ("jobco", "otherco"):
        admin.execute(gql("mutation($id: ID!) { createTenant(input: {id: $id}) { id } }"), variable_values={"id": tenant})
        secrets[tenant] = admin.execute(
            gql("mutation($t: ID!) { createKey(input: {tenantId: $t}) { secret } }"), variable_values={"t": tenant}
        )["createKey"]["secret"]
    owner = client(gw, secrets["jobco"])
    made = owner.execute(
        gql("mutation($in: CreateJobInput!) { createJob(input: $in) { id status type model } }"),
        variable_values={"in": {"type": "TEXT", "model": "openai/gpt-4o-mini", "prompt": "Say hello", "maxTokens": 32}},
    )["createJob"]
    assert made["status"] in ("PENDING", "PROCESSING") and made["type"] == "TEXT", made
    assert made["model"] == "openai/gpt-4o-mini"

    query = gql("query($id: ID!) { job(id: $id) { status batchStatus result { statusCode text response } error { code } "
                "usage { promptTokens completionTokens costUsd } createdAt endedAt } }")
    deadline = time.monotonic() + 30
    seen = []
    while True:
        job = owner.execute(query, variable_values={"id": made["id"]})["job"]
        if not seen or seen[-1] != job["status"]:
            seen.append(job["status"])
        if job["status"] in ("COMPLETED", "FAILED") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert job["status"] == "COMPLETED", (seen, job)
    assert job["error"] is None and job["endedAt"] is not None
    assert job["result"]["statusCode"] == 200
    assert job["result"]["text"] == mocks["openai"].default_answer.full_text
    assert job["result"]["response"]["choices"][0]["message"]["content"] == job["result"]["text"]
    assert job["usage"]["promptTokens"] > 0 and job["usage"]["completionTokens"] > 0

    listed = owner.execute(gql("{ jobs(first: 10, status: COMPLETED) { edges { node { id } } } }"))["jobs"]
    assert made["id"] in [e["node"]["id"] for e in listed["edges"]]

    other = client(gw, secrets["otherco"])
    with pytest.raises(TransportQueryError) as e:
        other.execute(query, variable_values={"id": made["id"]})
    assert e.value.errors[0]["extensions"]["code"] == "NOT_FOUND", e.value.errors
    with pytest.raises(TransportQueryError) as e:
        owner.execute(gql("mutation { createJob(input: {type: IMAGE, prompt: \"a cat\"}) { id } }"))
    assert e.value.errors[0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "not routed yet" in e.value.errors[0]["message"]
