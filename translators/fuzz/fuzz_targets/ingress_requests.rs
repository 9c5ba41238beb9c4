//! Ingress request decoders (issues #12, #13): arbitrary bytes as an Anthropic Messages, Responses,
//! completions or embeddings body. No panic; a decoded request always re-serializes as a JSON object,
//! and the byte-preserving model renames keep every other byte parseable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use translators::{anthropic_ingress, completions, embeddings, responses};

fuzz_target!(|data: &[u8]| {
    if let Ok(dec) = anthropic_ingress::decode_request(data) {
        let v = serde_json::to_value(&dec.chat).unwrap_or(Value::Null);
        assert!(v.is_object(), "hub request from a Messages body is not an object");
    }
    if let Ok(head) = anthropic_ingress::parse_head(data) {
        if let Ok(out) = anthropic_ingress::rewrite_model(bytes::Bytes::copy_from_slice(data), &head, "claude-x") {
            let v: Value = serde_json::from_slice(&out).unwrap_or_else(|e| panic!("renamed Messages body is not JSON: {e}"));
            assert_eq!(v["model"], "claude-x");
        }
    }
    if let Ok(dec) = responses::decode_request(data) {
        let v = serde_json::to_value(&dec.chat).unwrap_or(Value::Null);
        assert!(v.is_object(), "hub request from a Responses body is not an object");
    }
    if let Ok(head) = responses::parse_head(data) {
        if let Ok(out) = responses::passthrough::rename_model(bytes::Bytes::copy_from_slice(data), &head.model, "gpt-x") {
            let v: Value = serde_json::from_slice(&out).unwrap_or_else(|e| panic!("renamed Responses body is not JSON: {e}"));
            assert_eq!(v["model"], "gpt-x");
        }
    }
    let _ = completions::decode_request(data);
    let _ = embeddings::parse_request(data);
    let _ = anthropic_ingress::count_tokens(data);
});
