//! SSE framer: arbitrary bytes split anywhere never panic and give the same events as one whole feed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use translators::framing::sse::{SseEvent, SseFramer};
use translators_fuzz::{cuts, pieces, BYTEWISE_MAX};

fn frame(max: usize, pieces: &[&[u8]]) -> (Vec<SseEvent>, bool) {
    let mut framer = SseFramer::new(max);
    let mut out = Vec::new();
    for p in pieces {
        if framer.feed(p, &mut out).is_err() {
            return (out, true);
        }
    }
    framer.finish(&mut out);
    let _ = framer.has_pending();
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let max = translators::framing::DEFAULT_MAX_EVENT_BYTES;
    let whole = frame(max, &[data]);
    assert!(!whole.1, "no event can exceed the default limit here");
    let cut = cuts(data);
    assert_eq!(frame(max, &pieces(data, &cut)), whole, "split at {cut:?}");
    if data.len() <= BYTEWISE_MAX {
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(frame(max, &bytes), whole, "one-byte feeds");
    }
    // A tiny limit exercises the oversized-event path: an error, never a panic.
    let _ = frame(16, &pieces(data, &cut));
});
