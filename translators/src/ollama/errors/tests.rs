use super::*;

fn map(status: u16, body: &str) -> MappedError {
    map_error(status, body.as_bytes())
}

#[test]
fn not_found_is_404_model_not_found() {
    let m = map(404, r#"{"error":"model \"llama9\" not found, try pulling it first"}"#);
    assert_eq!(m.status, 404);
    assert_eq!(m.body.kind, "invalid_request_error");
    assert_eq!(m.body.code.as_deref(), Some("model_not_found"));
    assert_eq!(m.body.message, "ollama: model \"llama9\" not found, try pulling it first");
    assert_eq!(m.body.param, None);
}

#[test]
fn bad_request_keeps_the_message() {
    let m = map(400, r#"{"error":"registry.ollama.ai/library/gemma:2b does not support tools"}"#);
    assert_eq!(m.status, 400);
    assert_eq!(m.body.kind, "invalid_request_error");
    assert_eq!(m.body.message, "ollama: registry.ollama.ai/library/gemma:2b does not support tools");
}

#[test]
fn auth_failures_become_502() {
    for status in [401, 403] {
        let m = map(status, r#"{"error":"unauthorized","signin_url":"https://ollama.com/connect?key=abc"}"#);
        assert_eq!(m.status, 502);
        assert_eq!(m.body.code.as_deref(), Some("upstream_auth_failed"));
        assert!(!m.body.message.contains("signin"), "{}", m.body.message);
        assert!(m.body.message.starts_with("ollama: "));
    }
}

#[test]
fn queue_full_is_503_overloaded() {
    let m = map(503, r#"{"error":"server busy, please try again.  maximum pending requests exceeded"}"#);
    assert_eq!(m.status, 503);
    assert_eq!(m.body.kind, "server_error");
    assert_eq!(m.body.code.as_deref(), Some("overloaded"));
}

#[test]
fn server_errors_become_502() {
    for status in [500, 502, 499] {
        let m = map(status, r#"{"error":"llama runner process has terminated"}"#);
        assert_eq!(m.status, 502, "{status}");
        assert_eq!(m.body.kind, "server_error");
        assert_eq!(m.body.message, "ollama: llama runner process has terminated");
    }
    assert_eq!(map(504, r#"{"error":"timeout"}"#).status, 504);
    assert_eq!(map(429, r#"{"error":"slow down"}"#).status, 429);
}

#[test]
fn non_json_bodies_are_502_upstream_error() {
    for (status, body) in
        [(404, "404 page not found"), (500, "<html>oops</html>"), (503, ""), (400, r#"{"message":"x"}"#)]
    {
        let m = map(status, body);
        assert_eq!(m.status, 502, "{status} {body}");
        assert_eq!(m.body.code.as_deref(), Some("upstream_error"));
        assert!(m.body.message.starts_with("ollama: HTTP "), "{}", m.body.message);
    }
}

#[test]
fn raw_non_json_bodies_are_not_echoed() {
    let m = map(500, "<html>secret internal page</html>");
    assert_eq!(m.body.message, "ollama: HTTP 500 with a non-JSON body");
    assert_eq!(map(502, " \n").body.message, "ollama: HTTP 502 with an empty body");
}
