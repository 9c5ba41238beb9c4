//! NDJSON framer: arbitrary bytes split anywhere never panic and give the same lines as one whole feed.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use translators::framing::ndjson::NdjsonFramer;
use translators_fuzz::{cuts, pieces, BYTEWISE_MAX};

fn frame(max: usize, pieces: &[&[u8]]) -> (Vec<Bytes>, bool) {
    let mut framer = NdjsonFramer::new(max);
    let mut out = Vec::new();
    for p in pieces {
        if framer.feed(p, &mut out).is_err() {
            return (out, true);
        }
    }
    framer.finish(&mut out);
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let max = translators::framing::DEFAULT_MAX_EVENT_BYTES;
    let whole = frame(max, &[data]);
    assert!(!whole.1, "no line can exceed the default limit here");
    for line in &whole.0 {
        assert!(!line.contains(&b'\n'), "a line kept its terminator: {line:?}");
    }
    let cut = cuts(data);
    assert_eq!(frame(max, &pieces(data, &cut)), whole, "split at {cut:?}");
    if data.len() <= BYTEWISE_MAX {
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(frame(max, &bytes), whole, "one-byte feeds");
    }
    let _ = frame(16, &pieces(data, &cut));
});
