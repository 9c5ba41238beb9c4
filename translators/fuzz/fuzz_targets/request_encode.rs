//! Request translators: arbitrary bytes → `openai::ChatRequest` → Anthropic / Ollama bodies, and the
//! OpenAI pass-through head parse + rewrite. No panic; every encoded body parses as JSON, or a clean error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use translators::openai::{passthrough, ChatRequest};
use translators::{anthropic, ollama};
use translators_fuzz::flag;

fuzz_target!(|data: &[u8]| {
    let stream = flag(data, 0);
    if let Ok(req) = serde_json::from_slice::<ChatRequest>(data) {
        let opts = anthropic::EncodeOptions {
            upstream_model: "claude-sonnet-4-5",
            stream,
            default_max_tokens: flag(data, 1).then_some(1024),
        };
        if let Ok(enc) = anthropic::encode_request(&req, &opts) {
            let body: Value = serde_json::from_slice(&enc.body)
                .unwrap_or_else(|e| panic!("anthropic body is not JSON ({e}): {}", String::from_utf8_lossy(&enc.body)));
            assert!(body.is_object(), "anthropic body is not an object");
            assert_eq!(body["model"], "claude-sonnet-4-5");
        }
        let opts = ollama::EncodeOptions {
            upstream_model: "llama3.2",
            stream,
            num_ctx: flag(data, 2).then_some(8192),
            keep_alive: flag(data, 3).then_some("5m"),
        };
        if let Ok(enc) = ollama::encode_request(&req, &opts) {
            let body: Value = serde_json::from_slice(&enc.body)
                .unwrap_or_else(|e| panic!("ollama body is not JSON ({e}): {}", String::from_utf8_lossy(&enc.body)));
            assert!(body.is_object(), "ollama body is not an object");
            assert_eq!(body["model"], "llama3.2");
        }
    }
    if let Ok(head) = passthrough::parse_head(data) {
        if let Ok(out) = passthrough::rewrite_request(bytes::Bytes::copy_from_slice(data), &head, "gpt-4.1") {
            let body: Value = serde_json::from_slice(&out)
                .unwrap_or_else(|e| panic!("rewritten body is not JSON ({e}): {}", String::from_utf8_lossy(&out)));
            assert_eq!(body["model"], "gpt-4.1", "model renamed");
            if head.stream {
                assert_eq!(body["stream_options"]["include_usage"], true, "usage forced on streams");
            }
        }
    }
});
