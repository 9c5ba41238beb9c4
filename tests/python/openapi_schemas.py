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
