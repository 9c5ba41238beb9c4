//! Conformance of the gateway's outputs to OpenAI's OpenAPI spec (`../shared/specs/openai-openapi.yaml`,
//! relative to the workspace root). Each test is skipped, with a message, when the file is absent.
//!
//! The checker is a small JSON-Schema subset: `$ref`, `allOf`, `anyOf`/`oneOf` (one alternative must
//! match), `type`, `nullable`, `enum`, `required`, `properties` and `items`. Formats and numeric bounds
//! are not checked.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use super::stream::tests::{finish, reasoning, rich_usage, run, text, tool};
use super::*;
use crate::openai::{ChatResponse, Choice, ErrorBody, FinishReason, FunctionCall, ResponseMessage, ToolCall};
use crate::stream::StreamEvent;

const SPEC_FILE: &str = "openai-openapi.yaml";

fn spec_path() -> Option<PathBuf> {
    // The workspace root is the translators crate's parent; worktrees sit one level deeper.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    [root.join("../shared/specs"), root.join("../../shared/specs")]
        .into_iter()
        .map(|dir| dir.join(SPEC_FILE))
        .find(|p| p.is_file())
}

/// `components.schemas` of the spec, parsed once per test run.
pub(crate) fn schemas() -> Option<&'static Map<String, Value>> {
    static SPEC: OnceLock<Option<Map<String, Value>>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let Some(path) = spec_path() else {
            eprintln!("SKIPPED: {SPEC_FILE} not found in ../shared/specs relative to the workspace root");
            return None;
        };
        let text = std::fs::read_to_string(&path).unwrap();
        let options = serde_saphyr::options! {
            budget: serde_saphyr::budget! {
                max_events: 50_000_000,
                max_nodes: 50_000_000,
                max_total_scalar_bytes: 512 * 1024 * 1024,
            },
        };
        let spec: Value = serde_saphyr::from_str_with_options(&text, options).unwrap();
        match spec.pointer("/components/schemas") {
            Some(Value::Object(schemas)) => Some(schemas.clone()),
            _ => panic!("{} has no components.schemas", path.display()),
        }
    })
    .as_ref()
}

/// Errors of `value` against `schema` (empty = valid).
pub(crate) fn validate(schemas: &Map<String, Value>, schema: &Value, value: &Value, path: &str) -> Vec<String> {
    let mut errors = Vec::new();
    check(schemas, schema, value, path, &mut errors);
    errors
}

/// Errors of `value` against the named component schema.
pub(crate) fn validate_named(schemas: &Map<String, Value>, name: &str, value: &Value) -> Vec<String> {
    let schema = schemas.get(name).unwrap_or_else(|| panic!("no schema {name}"));
    validate(schemas, schema, value, name)
}

fn check(schemas: &Map<String, Value>, schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let Value::Object(s) = schema else { return };
    if let Some(Value::String(reference)) = s.get("$ref") {
        let name = reference.rsplit('/').next().unwrap_or_default();
        let target = schemas.get(name).unwrap_or_else(|| panic!("dangling $ref {reference}"));
        check(schemas, target, value, path, errors);
    }
    if value.is_null() && s.get("nullable") == Some(&Value::Bool(true)) {
        return;
    }
    for member in s.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        check(schemas, member, value, path, errors);
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(alternatives)) = s.get(key) {
            let mut best: Option<Vec<String>> = None;
            for alternative in alternatives {
                let e = validate(schemas, alternative, value, path);
                if e.is_empty() {
                    best = Some(e);
                    break;
                }
                if best.as_ref().is_none_or(|b| e.len() < b.len()) {
                    best = Some(e);
                }
            }
            if let Some(best) = best.filter(|b| !b.is_empty()) {
                errors.push(format!("{path}: matches no {key} alternative; closest: {best:?}"));
            }
        }
    }
    if let Some(Value::String(kind)) = s.get("type") {
        let ok = match kind.as_str() {
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "object" => value.is_object(),
            "array" => value.is_array(),
            "null" => value.is_null(),
            _ => true,
        };
        if !ok {
            errors.push(format!("{path}: expected {kind}, got {value}"));
            return;
        }
    }
    if let Some(Value::Array(allowed)) = s.get("enum") {
        if !allowed.contains(value) {
            errors.push(format!("{path}: {value} not in enum {allowed:?}"));
        }
    }
    if let Value::Object(obj) = value {
        for key in s.get("required").and_then(Value::as_array).into_iter().flatten() {
            let key = key.as_str().unwrap_or_default();
            if !obj.contains_key(key) {
                errors.push(format!("{path}: missing required `{key}`"));
            }
        }
        if let Some(Value::Object(properties)) = s.get("properties") {
            for (key, sub) in properties {
                if let Some(v) = obj.get(key) {
                    check(schemas, sub, v, &format!("{path}.{key}"), errors);
                }
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, s.get("items")) {
        for (i, item) in items.iter().enumerate() {
            check(schemas, item_schema, item, &format!("{path}[{i}]"), errors);
        }
    }
}

/// The `ResponseStreamEvent` member schema for an event `type`.
fn event_schema<'a>(schemas: &'a Map<String, Value>, kind: &str) -> Option<&'a Value> {
    let members = schemas.get("ResponseStreamEvent")?.get("anyOf")?.as_array()?;
    members.iter().find_map(|member| {
        let name = member.get("$ref")?.as_str()?.rsplit('/').next()?;
        let schema = schemas.get(name)?;
        let enum_values = schema.pointer("/properties/type/enum")?.as_array()?;
        enum_values.contains(&Value::from(kind)).then_some(schema)
    })
}

fn rich_chat_response(finish: FinishReason) -> ChatResponse {
    ChatResponse {
        id: "chatcmpl-1".into(),
        object: "chat.completion".into(),
        created: 1,
        model: "up".into(),
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: "assistant".into(),
                content: Some("Hello".into()),
                refusal: Some("partly not".into()),
                tool_calls: Some(vec![
                    ToolCall {
                        id: "call_1".into(),
                        kind: "function".into(),
                        function: FunctionCall { name: "f".into(), arguments: "{}".into() },
                    },
                    ToolCall {
                        id: "call_2".into(),
                        kind: "function".into(),
                        function: FunctionCall { name: "patch".into(), arguments: "{\"input\":\"x\"}".into() },
                    },
                    ToolCall {
                        id: "call_3".into(),
                        kind: "function".into(),
                        function: FunctionCall { name: "ns__g".into(), arguments: "{}".into() },
                    },
                ]),
                reasoning_content: Some("thinking".into()),
            },
            logprobs: None,
            finish_reason: Some(finish),
        }],
        usage: Some(rich_usage()),
        system_fingerprint: None,
    }
}

fn rich_echo(summary: bool) -> Echo {
    let body = json!({
        "model": "m", "instructions": "sys", "input": "x",
        "tools": [
            {"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}},
            {"type": "custom", "name": "patch", "format": {"type": "grammar", "syntax": "lark", "definition": "s"}},
            {"type": "namespace", "name": "ns", "description": "group", "tools": [{"type": "function", "name": "g"}]}
        ],
        "tool_choice": "required", "temperature": 0.3, "top_p": 0.8, "max_output_tokens": 100,
        "text": {"format": {"type": "json_schema", "name": "o", "schema": {"type": "object"}, "strict": true}},
        "reasoning": if summary { json!({"effort": "low", "summary": "auto"}) } else { json!({"effort": "low"}) },
        "metadata": {"k": "v"}, "store": true, "user": "u", "prompt_cache_key": "p"
    });
    decode_request(body.to_string().as_bytes()).unwrap().echo
}

#[test]
fn responses_validate_against_the_spec() {
    let Some(schemas) = schemas() else { return };
    let ctx = super::stream::tests::ctx();
    for finish in [FinishReason::Stop, FinishReason::ToolCalls, FinishReason::Length, FinishReason::ContentFilter] {
        for summary in [false, true] {
            let response =
                serde_json::to_value(encode_response(&rich_chat_response(finish), &rich_echo(summary), &ctx)).unwrap();
            assert_eq!(response["output"].as_array().unwrap().last().unwrap()["namespace"], "ns");
            let errors = validate_named(schemas, "Response", &response);
            assert!(errors.is_empty(), "{finish:?}: {errors:#?}\n{response:#}");
        }
    }
    // Every key the spec marks required is present (checked above through allOf; asserted directly too).
    let response =
        serde_json::to_value(encode_response(&rich_chat_response(FinishReason::Stop), &rich_echo(false), &ctx))
            .unwrap();
    for member in schemas["Response"]["allOf"].as_array().unwrap() {
        for key in member.get("required").and_then(Value::as_array).into_iter().flatten() {
            assert!(response.get(key.as_str().unwrap()).is_some(), "missing {key}");
        }
    }
}

#[test]
fn stream_events_validate_against_the_spec() {
    let Some(schemas) = schemas() else { return };
    let mut echo = rich_echo(false);
    echo.custom_tools.insert("patch".into());
    let scripts: Vec<(Echo, Vec<StreamEvent>)> = vec![
        (
            echo.clone(),
            vec![
                reasoning("hm"),
                text("Hi"),
                tool(0, Some("call_1"), Some("f"), "{}"),
                tool(1, Some("call_2"), Some("patch"), "{\"input\":\"x\"}"),
                finish(FinishReason::ToolCalls),
                super::stream::tests::usage_chunk(rich_usage()),
            ],
        ),
        (rich_echo(true), vec![reasoning("plan"), text("cut"), finish(FinishReason::Length)]),
        (echo, vec![text("a"), StreamEvent::Error(ErrorBody::new("boom", "server_error", None))]),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (echo, script) in scripts {
        for event in run(echo, &script, None) {
            let kind = event["type"].as_str().unwrap().to_owned();
            let schema =
                event_schema(schemas, &kind).unwrap_or_else(|| panic!("`{kind}` is not a ResponseStreamEvent"));
            let errors = validate(schemas, schema, &event, &kind);
            assert!(errors.is_empty(), "{errors:#?}\n{event:#}");
            seen.insert(kind);
        }
    }
    for kind in [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
        "response.completed",
        "response.incomplete",
        "response.failed",
    ] {
        assert!(seen.contains(kind), "{kind} was not exercised");
    }
}

#[test]
fn every_event_kind_the_encoder_knows_is_in_the_spec() {
    let Some(schemas) = schemas() else { return };
    let kinds = [
        "response.created",
        "response.in_progress",
        "response.completed",
        "response.incomplete",
        "response.failed",
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.refusal.delta",
        "response.refusal.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_part.done",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
    ];
    for kind in kinds {
        assert!(event_schema(schemas, kind).is_some(), "{kind}");
    }
}

#[test]
fn the_checker_rejects_what_it_should() {
    let Some(schemas) = schemas() else { return };
    let ctx = super::stream::tests::ctx();
    let mut response =
        serde_json::to_value(encode_response(&rich_chat_response(FinishReason::Stop), &Echo::new("m"), &ctx)).unwrap();
    assert!(validate_named(schemas, "Response", &response).is_empty());
    response.as_object_mut().unwrap().remove("tool_choice");
    assert!(!validate_named(schemas, "Response", &response).is_empty(), "a missing required key is caught");
    let mut response =
        serde_json::to_value(encode_response(&rich_chat_response(FinishReason::Stop), &Echo::new("m"), &ctx)).unwrap();
    response["status"] = json!("finished");
    assert!(!validate_named(schemas, "Response", &response).is_empty(), "a bad enum value is caught");
    response["status"] = json!("completed");
    response["usage"]["input_tokens_details"].as_object_mut().unwrap().remove("cached_tokens");
    assert!(!validate_named(schemas, "Response", &response).is_empty(), "nested required keys are caught");
}
