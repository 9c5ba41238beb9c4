//! Ingress stream encoders (issues #12, #13): arbitrary upstream bytes through a provider decoder, then
//! the hub events through the Anthropic Messages and Responses encoders, and the Responses pass-through
//! usage scanner over the same bytes. No panic, and each encoder ends in exactly one terminal state.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use translators::responses::passthrough::UsageScanner;
use translators::{anthropic, anthropic_ingress, responses, StreamTranslator};
use translators_fuzz::{ctx, flag};

fuzz_target!(|data: &[u8]| {
    let mut decoder = anthropic::StreamDecoder::new(ctx(true, flag(data, 1)));
    let mut messages = anthropic_ingress::StreamEncoder::new(anthropic_ingress::EncodeContext {
        message_id: String::new(),
        model: "ollama/x".into(),
        include_thinking: flag(data, 2),
        input_tokens_hint: 0,
        id_seed: 7,
    });
    let mut resp = responses::StreamEncoder::new(
        responses::Echo::new("ollama/x"),
        responses::EncodeContext { response_id: responses::response_id(1), created_at: 1, completed_at: 2, id_seed: 3 },
    );
    let mut scanner = UsageScanner::new();
    let mut events = Vec::new();
    let mut out = BytesMut::new();
    let mut resp_events = Vec::new();
    // Feed in pieces whose sizes come from the data itself, so splits vary.
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    for piece in data.chunks(step) {
        decoder.feed(piece, &mut events);
        scanner.feed(piece);
        messages.push_all(&events, &mut out);
        resp.push(&events, &mut resp_events);
        events.clear();
    }
    let summary = decoder.finish(&mut events);
    messages.push_all(&events, &mut out);
    messages.finish(&summary, &mut out);
    assert!(messages.is_terminal(), "the Messages stream did not end");
    resp.push(&events, &mut resp_events);
    resp.finish(Some(&summary), &mut resp_events);
    assert!(resp.is_done(), "the Responses stream did not end");
    let _ = scanner.finish();
});
