//! Golden fixtures (`tests/fixtures/ollama/<case>/`) and split-invariance property tests.
//!
//! Each case holds the client's `request.json`, the upstream reply (`upstream.ndjson` for streams,
//! `upstream.json` otherwise), an optional `context.json` (`include_reasoning`, `num_ctx`, `keep_alive`,
//! `upstream_stream`), and the expected outputs: `expected_request.json` (the Ollama body), and either
//! `expected.jsonl` + `expected_summary.json` (stream events, one JSON per line) or `expected.json`.
//! `UPDATE_GOLDEN=1 cargo test -p translators` rewrites the expected files.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::openai::ChatRequest;
use crate::stream::{ResponseContext, StreamEvent, StreamOutcome, StreamSummary, StreamTranslator};

struct Case {
    name: String,
    dir: PathBuf,
    request: ChatRequest,
    context: Value,
    ctx: ResponseContext,
    /// `upstream.ndjson` bytes for stream cases.
    stream: Option<Vec<u8>>,
}

fn fixture_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ollama")
}

fn load_cases() -> Vec<Case> {
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(fixture_root()).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    dirs.into_iter()
        .map(|dir| {
            let request: ChatRequest =
                serde_json::from_slice(&std::fs::read(dir.join("request.json")).unwrap()).unwrap();
            let context: Value = std::fs::read(dir.join("context.json"))
                .map(|b| serde_json::from_slice(&b).unwrap())
                .unwrap_or_else(|_| json!({}));
            let ctx = ResponseContext {
                id: "chatcmpl-golden".into(),
                created: 1_760_000_000,
                model: request.model.clone(),
                include_usage: request.wants_stream_usage(),
                include_reasoning: context["include_reasoning"].as_bool().unwrap_or(false),
                id_seed: 42,
            };
            let stream = std::fs::read(dir.join("upstream.ndjson")).ok();
            Case { name: dir.file_name().unwrap().to_string_lossy().into_owned(), dir, request, context, ctx, stream }
        })
        .collect()
}

fn stream_cases() -> &'static [Case] {
    static CASES: OnceLock<Vec<Case>> = OnceLock::new();
    CASES.get_or_init(|| load_cases().into_iter().filter(|c| c.stream.is_some()).collect())
}

fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1")
}

/// Compares `actual` with the expected file, or rewrites it under `UPDATE_GOLDEN=1`.
fn golden_json(path: &Path, actual: &Value) {
    if updating() {
        std::fs::write(path, serde_json::to_string_pretty(actual).unwrap() + "\n").unwrap();
        return;
    }
    let expected: Value = serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|_| panic!("missing {}; run with UPDATE_GOLDEN=1", path.display())),
    )
    .unwrap();
    assert_eq!(actual, &expected, "{}", path.display());
}

fn golden_jsonl(path: &Path, actual: &[Value]) {
    if updating() {
        let text: String = actual.iter().map(|v| serde_json::to_string(v).unwrap() + "\n").collect();
        std::fs::write(path, text).unwrap();
        return;
    }
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|_| panic!("missing {}; run with UPDATE_GOLDEN=1", path.display()));
    let expected: Vec<Value> =
        text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(actual.len(), expected.len(), "{}: event count", path.display());
    for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
        assert_eq!(a, e, "{} line {}", path.display(), i + 1);
    }
}

pub(crate) fn event_json(event: &StreamEvent) -> Value {
    match event {
        StreamEvent::Chunk(c) => serde_json::to_value(c).unwrap(),
        StreamEvent::Raw(raw) => serde_json::from_slice(raw).unwrap(),
        StreamEvent::Error(body) => json!({"error": body}),
    }
}

pub(crate) fn summary_json(s: &StreamSummary) -> Value {
    let outcome = match &s.outcome {
        StreamOutcome::Open => json!("open"),
        StreamOutcome::Completed => json!("completed"),
        StreamOutcome::Truncated => json!("truncated"),
        StreamOutcome::UpstreamError(body) => json!({"upstream_error": body}),
    };
    json!({
        "outcome": outcome,
        "usage": s.usage,
        "usage_is_final": s.usage_is_final,
        "streamed_bytes": s.streamed_bytes,
        "finish_reason": s.finish_reason,
        "upstream_model": s.upstream_model,
    })
}

/// Feeds `input` cut at `cuts` (sorted, clamped) and finishes.
fn run_split(ctx: &ResponseContext, input: &[u8], cuts: &[usize]) -> (Vec<StreamEvent>, StreamSummary) {
    let mut decoder = StreamDecoder::new(ctx.clone());
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts {
        let cut = cut.clamp(start, input.len());
        decoder.feed(&input[start..cut], &mut out);
        start = cut;
    }
    decoder.feed(&input[start..], &mut out);
    let summary = decoder.finish(&mut out);
    (out, summary)
}

#[test]
fn golden_fixtures() {
    let cases = load_cases();
    assert!(cases.len() >= 14, "fixtures missing: {}", cases.len());
    for case in &cases {
        let upstream_stream = case.context["upstream_stream"].as_bool().unwrap_or(case.request.is_stream());
        let keep_alive = case.context["keep_alive"].as_str();
        let opts = EncodeOptions {
            upstream_model: "llama3.2",
            stream: upstream_stream,
            num_ctx: case.context["num_ctx"].as_u64(),
            keep_alive,
        };
        let encoded = encode_request(&case.request, &opts).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let body: Value = serde_json::from_slice(&encoded.body).unwrap();
        golden_json(&case.dir.join("expected_request.json"), &body);

        if let Some(input) = &case.stream {
            let (events, summary) = run_split(&case.ctx, input, &[]);
            let events: Vec<Value> = events.iter().map(event_json).collect();
            golden_jsonl(&case.dir.join("expected.jsonl"), &events);
            golden_json(&case.dir.join("expected_summary.json"), &summary_json(&summary));
        } else {
            let upstream = std::fs::read(case.dir.join("upstream.json")).unwrap();
            let resp = decode_response(&upstream, &case.ctx).unwrap_or_else(|e| panic!("{}: {e}", case.name));
            golden_json(&case.dir.join("expected.json"), &serde_json::to_value(resp).unwrap());
        }
    }
}

/// Every stream invariant the gateway relies on, checked on every fixture.
#[test]
fn fixture_streams_are_well_formed() {
    for case in stream_cases() {
        let (events, summary) = run_split(&case.ctx, case.stream.as_deref().unwrap(), &[]);
        let chunks: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Chunk(c) => Some(c),
                _ => None,
            })
            .collect();
        for c in &chunks {
            assert_eq!(c.id, "chatcmpl-golden", "{}", case.name);
            assert_eq!(c.created, 1_760_000_000, "{}", case.name);
            assert_eq!(c.usage.is_some(), case.ctx.include_usage, "{}: usage key", case.name);
        }
        let finishes = chunks.iter().filter(|c| c.choices.iter().any(|ch| ch.finish_reason.is_some())).count();
        let errors = events.iter().filter(|e| matches!(e, StreamEvent::Error(_))).count();
        match summary.outcome {
            StreamOutcome::Completed => {
                assert_eq!((finishes, errors), (1, 0), "{}", case.name);
                assert!(summary.usage_is_final);
            }
            _ => {
                assert_eq!((finishes, errors), (0, 1), "{}", case.name);
                assert!(matches!(events.last(), Some(StreamEvent::Error(_))), "{}", case.name);
            }
        }
        if let Some(StreamEvent::Chunk(first)) = events.first() {
            assert_eq!(first.choices[0].delta.role.as_deref(), Some("assistant"), "{}", case.name);
        }
    }
}

#[test]
fn every_single_split_position_gives_the_same_events() {
    for case in stream_cases() {
        let input = case.stream.as_deref().unwrap();
        let whole = run_split(&case.ctx, input, &[]);
        for cut in 0..=input.len() {
            assert_eq!(run_split(&case.ctx, input, &[cut]), whole, "{} cut at {cut}", case.name);
        }
    }
}

#[test]
fn one_byte_at_a_time_gives_the_same_events() {
    for case in stream_cases() {
        let input = case.stream.as_deref().unwrap();
        let cuts: Vec<usize> = (1..input.len()).collect();
        assert_eq!(run_split(&case.ctx, input, &cuts), run_split(&case.ctx, input, &[]), "{}", case.name);
    }
}

proptest! {
    #[test]
    fn random_splits_give_the_same_events(mut cuts in proptest::collection::vec(0usize..4096, 0..24)) {
        cuts.sort_unstable();
        for case in stream_cases() {
            let input = case.stream.as_deref().unwrap();
            let cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect::<Vec<_>>();
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(run_split(&case.ctx, input, &cuts), run_split(&case.ctx, input, &[]), "{}", case.name);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024), cut in 0usize..1024) {
        let ctx = stream_cases()[0].ctx.clone();
        let mut decoder = StreamDecoder::new(ctx);
        let mut out = Vec::new();
        let cut = cut.min(bytes.len());
        decoder.feed(&bytes[..cut], &mut out);
        decoder.feed(&bytes[cut..], &mut out);
        let summary = decoder.finish(&mut out);
        prop_assert!(summary.outcome != StreamOutcome::Open);
    }

    #[test]
    fn mutated_fixtures_never_panic(case_ix in 0usize..64, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let cases = stream_cases();
        let case = &cases[case_ix % cases.len()];
        let mut input = case.stream.clone().unwrap();
        for (pos, byte) in flips {
            let len = input.len();
            input[pos % len] = byte;
        }
        let (_, summary) = run_split(&case.ctx, &input, &[input.len() / 2]);
        prop_assert!(summary.outcome != StreamOutcome::Open);
    }

    #[test]
    fn arbitrary_error_and_tags_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), status in 100u16..600) {
        let mapped = map_error(status, &bytes);
        prop_assert!(mapped.body.message.starts_with("ollama: "));
        let _ = parse_tags(&bytes);
        let _ = decode_response(&bytes, &stream_cases()[0].ctx);
    }
}
