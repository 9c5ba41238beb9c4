use base64::Engine as _;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

fn parse(body: Value) -> Result<EmbeddingsRequest, TranslateError> {
    parse_request(body.to_string().as_bytes())
}

fn opts(max_batch: usize) -> OllamaEmbedOptions<'static> {
    OllamaEmbedOptions { upstream_model: "nomic-embed-text", truncate: false, keep_alive: Some("10m"), max_batch }
}

#[test]
fn parses_every_text_form() {
    let r = parse(json!({"model": "ollama/nomic", "input": "hello"})).unwrap();
    assert_eq!(r.input, ["hello"]);
    assert_eq!(r.encoding_format, EncodingFormat::Float);
    let r = parse(json!({"model": "m", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 256, "user": "u", "extra": 1}))
        .unwrap();
    assert_eq!(
        r,
        EmbeddingsRequest {
            model: "m".into(),
            input: vec!["a".into(), "b".into()],
            encoding_format: EncodingFormat::Base64,
            dimensions: Some(256),
            user: Some("u".into()),
        }
    );
}

#[test]
fn refuses_tokens_and_bad_fields_with_param() {
    let cases = [
        (json!({"model": "m", "input": [1, 2, 3]}), "input", true),
        (json!({"model": "m", "input": [[1, 2], [3]]}), "input", true),
        (json!({"model": "m", "input": []}), "input", false),
        (json!({"model": "m"}), "input", false),
        (json!({"model": "m", "input": [null]}), "input", false),
        (json!({"input": "x"}), "model", false),
        (json!({"model": "m", "input": "x", "encoding_format": "int8"}), "encoding_format", false),
        (json!({"model": "m", "input": "x", "dimensions": 0}), "dimensions", false),
        (json!({"model": "m", "input": vec!["x"; MAX_INPUTS + 1]}), "input", false),
    ];
    for (body, param, unsupported) in cases {
        let e = parse(body).unwrap_err();
        assert_eq!(e.param(), Some(param), "{e}");
        assert_eq!(matches!(e, TranslateError::Unsupported { .. }), unsupported, "{e}");
    }
}

#[test]
fn ollama_bodies_are_batched_in_order() {
    let r = parse(json!({"model": "m", "input": ["a", "b", "c"], "dimensions": 2})).unwrap();
    let bodies: Vec<Value> = encode_ollama(&r, &opts(2)).iter().map(|b| serde_json::from_slice(b).unwrap()).collect();
    assert_eq!(
        bodies,
        [
            json!({"model": "nomic-embed-text", "input": ["a", "b"], "truncate": false, "dimensions": 2, "keep_alive": "10m"}),
            json!({"model": "nomic-embed-text", "input": ["c"], "truncate": false, "dimensions": 2, "keep_alive": "10m"}),
        ]
    );
    let single = encode_ollama(&parse(json!({"model": "m", "input": "x"})).unwrap(), &opts(0));
    assert_eq!(serde_json::from_slice::<Value>(&single[0]).unwrap()["input"], json!(["x"]));
}

#[test]
fn float_response_is_reindexed_across_batches_with_usage() {
    let r = parse(json!({"model": "ollama/nomic", "input": ["a", "b", "c"]})).unwrap();
    let first = br#"{"model":"nomic","embeddings":[[0.1,-0.5],[1.0,2.0]],"total_duration":5,"prompt_eval_count":4}"#;
    let second = br#"{"model":"nomic","embeddings":[[3.25,0.0]],"prompt_eval_count":2}"#;
    let resp = decode_ollama(&[first, second], &r).unwrap();
    let got: Value = serde_json::from_slice(&resp.to_bytes()).unwrap();
    assert_eq!(
        got,
        json!({
            "object": "list",
            "data": [
                {"object": "embedding", "index": 0, "embedding": [0.1, -0.5]},
                {"object": "embedding", "index": 1, "embedding": [1.0, 2.0]},
                {"object": "embedding", "index": 2, "embedding": [3.25, 0.0]}
            ],
            "model": "ollama/nomic",
            "usage": {"prompt_tokens": 6, "total_tokens": 6}
        })
    );
    assert_eq!(resp.usage(), Usage { prompt_tokens: 6, completion_tokens: 0, total_tokens: 6, ..Usage::default() });
}

#[test]
fn base64_is_little_endian_f32_as_the_sdks_decode_it() {
    let r = parse(json!({"model": "m", "input": "a", "encoding_format": "base64"})).unwrap();
    let resp = decode_ollama(&[br#"{"embeddings":[[1.0,-2.5,0.1]],"prompt_eval_count":1}"#], &r).unwrap();
    let got: Value = serde_json::from_slice(&resp.to_bytes()).unwrap();
    let b64 = got["data"][0]["embedding"].as_str().unwrap();
    // 1.0f32 = 00 00 80 3f, -2.5f32 = 00 00 20 c0, 0.1f32 = cd cc cc 3d.
    assert_eq!(b64, "AACAPwAAIMDNzMw9");
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    let floats: Vec<f32> = bytes.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(floats, [1.0, -2.5, 0.1]);
}

#[test]
fn upstream_problems_are_errors() {
    let r = parse(json!({"model": "m", "input": ["a", "b"], "dimensions": 3})).unwrap();
    let e = decode_ollama(&[br#"{"embeddings":[[1,2,3,4],[1,2,3,4]]}"#], &r).unwrap_err();
    assert_eq!(e.param(), Some("dimensions"), "a backend ignoring dimensions never returns full width");
    let e = decode_ollama(&[br#"{"embeddings":[[1,2,3]]}"#], &r).unwrap_err();
    assert!(matches!(e, TranslateError::Protocol(_)), "{e}");
    let e = decode_ollama(&[br#"{"error":"model not found"}"#], &r).unwrap_err();
    assert!(e.to_string().contains("model not found"));
    assert!(matches!(decode_ollama(&[b"<html>"], &r).unwrap_err(), TranslateError::Json { .. }));
}

#[test]
fn passthrough_usage() {
    let body = br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":"AACAPw=="}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}"#;
    assert_eq!(
        extract_usage(body),
        Some(Usage { prompt_tokens: 8, completion_tokens: 0, total_tokens: 8, ..Usage::default() })
    );
    assert_eq!(extract_usage(br#"{"data":[]}"#), None);
    assert_eq!(extract_usage(b"nope"), None);
}

#[test]
fn responses_validate_against_the_spec() {
    let Some(schemas) = crate::responses::spec_tests::schemas() else { return };
    let r = parse(json!({"model": "m", "input": ["a", "b"]})).unwrap();
    let resp = decode_ollama(&[br#"{"embeddings":[[0.5],[0.25]],"prompt_eval_count":2}"#], &r).unwrap();
    let value: Value = serde_json::from_slice(&resp.to_bytes()).unwrap();
    let errors = crate::responses::spec_tests::validate_named(schemas, "CreateEmbeddingResponse", &value);
    assert!(errors.is_empty(), "{errors:#?}");
    // Our accepted requests are valid spec requests.
    let body = json!({"model": "m", "input": ["a"], "encoding_format": "base64", "dimensions": 8, "user": "u"});
    assert!(crate::responses::spec_tests::validate_named(schemas, "CreateEmbeddingRequest", &body).is_empty());
}

proptest! {
    #[test]
    fn base64_round_trips(v in proptest::collection::vec(any::<f32>().prop_filter("finite", |f| f.is_finite()), 0..64)) {
        let bytes = base64::engine::general_purpose::STANDARD.decode(base64_f32_le(&v)).unwrap();
        let back: Vec<f32> = bytes.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        prop_assert_eq!(back, v);
    }

    #[test]
    fn floats_survive_json_exactly(v in proptest::collection::vec(any::<f32>().prop_filter("finite", |f| f.is_finite()), 1..16)) {
        let r = EmbeddingsRequest { model: "m".into(), input: vec!["x".into()], encoding_format: EncodingFormat::Float, dimensions: None, user: None };
        let upstream = serde_json::to_vec(&json!({"embeddings": [v.clone()]})).unwrap();
        let resp = decode_ollama(&[&upstream], &r).unwrap();
        let back: EmbeddingsResponse = serde_json::from_slice(&resp.to_bytes()).unwrap();
        prop_assert_eq!(&back.data[0].embedding, &EmbeddingVector::Float(v));
    }

    #[test]
    fn batching_preserves_order(n in 1usize..40, batch in 1usize..10) {
        let input: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        let r = EmbeddingsRequest { model: "m".into(), input: input.clone(), encoding_format: EncodingFormat::Float, dimensions: None, user: None };
        let bodies = encode_ollama(&r, &opts(batch));
        let mut seen = Vec::new();
        let mut answers = Vec::new();
        for body in &bodies {
            let v: Value = serde_json::from_slice(body).unwrap();
            let batch_inputs: Vec<String> = serde_json::from_value(v["input"].clone()).unwrap();
            prop_assert!(batch_inputs.len() <= batch);
            let vectors: Vec<Vec<f32>> = batch_inputs.iter().map(|s| vec![s.parse::<f32>().unwrap()]).collect();
            seen.extend(batch_inputs);
            answers.push(serde_json::to_vec(&json!({"embeddings": vectors, "prompt_eval_count": 1})).unwrap());
        }
        prop_assert_eq!(&seen, &input);
        let refs: Vec<&[u8]> = answers.iter().map(Vec::as_slice).collect();
        let resp = decode_ollama(&refs, &r).unwrap();
        for (i, e) in resp.data.iter().enumerate() {
            prop_assert_eq!(e.index, i);
            prop_assert_eq!(&e.embedding, &EmbeddingVector::Float(vec![i as f32]));
        }
        prop_assert_eq!(resp.usage.prompt_tokens, bodies.len() as u64);
    }
}

proptest! {
    #[test]
    fn parse_and_decode_never_panic(body in "\\PC{0,120}", upstream in proptest::collection::vec(any::<u8>(), 0..120)) {
        let _ = parse_request(body.as_bytes());
        let r = EmbeddingsRequest { model: "m".into(), input: vec!["x".into()], encoding_format: EncodingFormat::Base64, dimensions: Some(2), user: None };
        let _ = decode_ollama(&[&upstream], &r);
        let _ = extract_usage(&upstream);
    }
}
