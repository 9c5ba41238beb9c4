"""Validators for OpenAI response shapes, built from the official OpenAPI document.

The spec (tests/fixtures/openai-openapi.yaml, MIT, copied from openai/openai-openapi) is OpenAPI 3.1 with a few
OpenAPI 3.0 leftovers: `nullable: true` is rewritten into JSON-Schema null types before validation. `$ref`s are
resolved by jsonschema against the whole document.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any

import jsonschema
import yaml

SPEC_PATH = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "openai-openapi.yaml"


def _fix_nullable(node: Any) -> Any:
    if isinstance(node, list):
        return [_fix_nullable(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _fix_nullable(v) for k, v in node.items()}
    if node.pop("nullable", False) is True:
        t = node.get("type")
        if isinstance(t, str):
            node["type"] = [t, "null"]
            if "enum" in node and None not in node["enum"]:
                node["enum"] = [*node["enum"], None]
        elif isinstance(t, list):
            if "null" not in t:
                node["type"] = [*t, "null"]
        else:
            node = {"anyOf": [node, {"type": "null"}]}
    return node


@functools.lru_cache(maxsize=1)
def _spec() -> dict:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC_PATH.open("rb") as f:
        spec = yaml.load(f, Loader=loader)
    return _fix_nullable(spec)


@functools.lru_cache(maxsize=None)
def validator(name: str) -> jsonschema.Draft202012Validator:
    spec = _spec()
    if name not in spec["components"]["schemas"]:
        raise KeyError(f"schema {name} not in the OpenAPI document")
    root = {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": spec["components"], "$ref": f"#/components/schemas/{name}"}
    return jsonschema.Draft202012Validator(root)


def validate(name: str, instance: Any) -> None:
    """Raises AssertionError listing every violation of schema `name`."""
    errors = sorted(validator(name).iter_errors(instance), key=lambda e: list(e.path))
    if errors:
        lines = [f"- at {'/'.join(map(str, e.path)) or '<root>'}: {e.message[:300]}" for e in errors[:10]]
        raise AssertionError(f"{name} violations ({len(errors)}):\n" + "\n".join(lines) + f"\ninstance: {instance}")


def completion(body: Any) -> None:
    validate("CreateChatCompletionResponse", body)


def chunk(body: Any) -> None:
    validate("CreateChatCompletionStreamResponse", body)


def error(body: Any) -> None:
    validate("ErrorResponse", body)


def model_list(body: Any) -> None:
    validate("ListModelsResponse", body)


def model(body: Any) -> None:
    validate("Model", body)


def response(body: Any) -> None:
    validate("Response", body)


@functools.lru_cache(maxsize=1)
def _event_schemas() -> dict[str, str]:
    """`type` of each member of the `ResponseStreamEvent` union → its schema name."""
    schemas = _spec()["components"]["schemas"]
    out = {}
    for member in schemas["ResponseStreamEvent"]["anyOf"]:
        name = member["$ref"].rsplit("/", 1)[1]
        for t in schemas[name]["properties"]["type"].get("enum", []):
            out[t] = name
    return out


def response_event(body: Any) -> None:
    """Validates one Responses stream event against the union member its `type` names (a clearer message
    than the whole union's), and that it is a member of the union at all."""
    name = _event_schemas().get(body.get("type") if isinstance(body, dict) else None)
    if name is None:
        raise AssertionError(f"not a ResponseStreamEvent type: {body}")
    validate(name, body)


def embeddings(body: Any) -> None:
    """The spec types `embedding` as a float array only; with `encoding_format: "base64"` OpenAI sends the
    little-endian float32 bytes as a base64 string (what the SDKs decode), so such strings are decoded
    (and must decode: standard base64 of a whole number of float32s) before validating."""
    import base64
    import copy
    import struct

    doc = copy.deepcopy(body)
    for item in doc.get("data", []) if isinstance(doc, dict) else []:
        if isinstance(item, dict) and isinstance(item.get("embedding"), str):
            raw = base64.b64decode(item["embedding"], validate=True)
            if len(raw) % 4:
                raise AssertionError(f"base64 embedding of {len(raw)} bytes is not float32s: {item}")
            item["embedding"] = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    validate("CreateEmbeddingResponse", doc)


def text_completion(body: Any) -> None:
    validate("CreateCompletionResponse", body)


def text_completion_chunk(body: Any) -> None:
    """A streamed legacy completion chunk: the spec has no chunk schema ("same shape as the response"), but
    real streams carry `finish_reason: null` until the last chunk, and `usage: null` on every chunk but the
    last when `stream_options.include_usage` is set (as in chat streams), so nulls are accepted there."""
    import copy

    doc = copy.deepcopy(body)
    if isinstance(doc, dict) and "usage" in doc and doc["usage"] is None:
        del doc["usage"]
    for choice in doc.get("choices", []) if isinstance(doc, dict) else []:
        if isinstance(choice, dict) and choice.get("finish_reason", "x") is None:
            choice["finish_reason"] = "stop"
    validate("CreateCompletionResponse", doc)
