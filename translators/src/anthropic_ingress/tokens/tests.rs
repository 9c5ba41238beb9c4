//! The count_tokens estimate: what it counts, and that it is never 0.

use serde_json::{json, Value};

use super::*;

fn count(v: Value) -> u64 {
    count_tokens(&serde_json::to_vec(&v).unwrap()).unwrap()
}

#[test]
fn counts_text_at_four_bytes_per_token_plus_framing() {
    // 40 bytes of text → 10 tokens, + one message.
    let n = count(json!({"model": "m", "messages": [{"role": "user", "content": "a".repeat(40)}]}));
    assert_eq!(n, 10 + TOKENS_PER_MESSAGE);
}

#[test]
fn system_tools_images_and_documents_count() {
    let base = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let plain = count(base.clone());
    let mut with_system = base.clone();
    with_system["system"] = json!([{"type": "text", "text": "s".repeat(400)}]);
    assert_eq!(count(with_system), plain + 100);

    let mut with_tools = base.clone();
    let schema = json!({"type": "object", "properties": {"path": {"type": "string"}}});
    with_tools["tools"] = json!([{"name": "Read", "description": "Reads a file", "input_schema": schema}]);
    let tool_bytes = ("Read".len() + "Reads a file".len() + schema.to_string().len()) as u64;
    assert_eq!(count(with_tools), (2 + tool_bytes).div_ceil(4) + TOKENS_PER_MESSAGE + TOOLS_OVERHEAD);

    let image = count(json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A".repeat(100_000)}}]}]}));
    assert_eq!(image, TOKENS_PER_IMAGE + TOKENS_PER_MESSAGE);

    let pdf = count(json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "A".repeat(200_000)}}]}]}));
    assert_eq!(pdf, 3 * TOKENS_PER_PDF_PAGE + TOKENS_PER_MESSAGE);
}

#[test]
fn tool_use_and_results_count() {
    let n = count(json!({"model": "m", "messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "Bash", "input": {"cmd": "ls"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "a.txt b.txt"}]}]}
    ]}));
    let bytes = ("Bash".len() + r#"{"cmd":"ls"}"#.len() + "a.txt b.txt".len()) as u64;
    assert_eq!(n, bytes.div_ceil(4) + 2 * TOKENS_PER_MESSAGE);
}

#[test]
fn never_zero_and_validates_like_messages() {
    assert_eq!(count(json!({"model": "m", "messages": []})), 1);
    assert_eq!(
        count_tokens(br#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#).unwrap_err().param(),
        Some("messages.0.role")
    );
    assert_eq!(String::from_utf8(count_tokens_json(42)).unwrap(), r#"{"input_tokens":42}"#);
}
