//! Helpers shared by the fuzz targets: deterministic split points derived from the input itself, so the
//! seed corpus is made of plain fixture files (no control prefix) and every mutation also moves the cuts.

use translators::stream::ResponseContext;
use translators::{StreamEvent, StreamSummary, StreamTranslator};

/// FNV-1a over the input: the seed of the split points.
fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Up to 16 sorted cut positions in `0..=len`, derived from the input (xorshift from its hash).
pub fn cuts(data: &[u8]) -> Vec<usize> {
    let mut state = fnv(data) | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let n = (next() % 17) as usize;
    let mut out: Vec<usize> = (0..n).map(|_| (next() % (data.len() as u64 + 1)) as usize).collect();
    out.sort_unstable();
    out
}

/// The input cut at `cuts` (empty pieces included: `feed(&[])` must be harmless too).
pub fn pieces<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for &c in cuts {
        let c = c.clamp(start, data.len());
        out.push(&data[start..c]);
        start = c;
    }
    out.push(&data[start..]);
    out
}

/// Inputs up to this size are also fed one byte at a time.
pub const BYTEWISE_MAX: usize = 512;

/// Feeds `pieces` to a fresh translator the way the gateway does (stop once terminal), then `finish`.
pub fn run_translator<T: StreamTranslator>(
    mut t: T,
    pieces: &[&[u8]],
) -> (Vec<StreamEvent>, StreamSummary) {
    let mut out = Vec::new();
    for p in pieces {
        if t.is_terminal() {
            break;
        }
        t.feed(p, &mut out);
        // `summary` is callable at any time (the ledger uses it for cancelled streams).
        let _ = t.summary();
    }
    let summary = t.finish(&mut out);
    // A second finish emits nothing new.
    let mut again = Vec::new();
    let _ = t.finish(&mut again);
    assert!(again.is_empty(), "a second finish emitted {again:?}");
    (out, summary)
}

/// Checks the translator contract on `data`: no panic, the stream is never left `Open` after `finish`,
/// at most one error event and nothing after it, and the same events and summary for the whole input,
/// for the input cut at input-derived points, and (small inputs) for one-byte feeds.
pub fn check_translator<T: StreamTranslator>(data: &[u8], make: impl Fn() -> T) {
    let whole = run_translator(make(), &[data]);
    assert!(
        whole.1.outcome != translators::StreamOutcome::Open,
        "finish left the stream open"
    );
    let errors: Vec<usize> = whole
        .0
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, StreamEvent::Error(_)))
        .map(|(i, _)| i)
        .collect();
    assert!(errors.len() <= 1, "more than one error event: {:?}", whole.0);
    if let Some(&i) = errors.first() {
        assert_eq!(i + 1, whole.0.len(), "events after the error event: {:?}", whole.0);
    }
    let cut = cuts(data);
    let split = run_translator(make(), &pieces(data, &cut));
    assert_eq!(split, whole, "split at {cut:?} differs from the whole feed");
    if data.len() <= BYTEWISE_MAX {
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        let bytewise = run_translator(make(), &bytes);
        assert_eq!(bytewise, whole, "one-byte feeds differ from the whole feed");
    }
}

/// The response context the gateway builds (fixed values: ids and clocks are the caller's).
pub fn ctx(include_usage: bool, include_reasoning: bool) -> ResponseContext {
    ResponseContext {
        id: "chatcmpl-fuzz".to_owned(),
        created: 1_760_000_000,
        model: "fuzz-model".to_owned(),
        include_usage,
        include_reasoning,
        id_seed: 7,
    }
}

/// One flag bit derived from the input (so both variants of a translator get fuzzed).
pub fn flag(data: &[u8], bit: u32) -> bool {
    fnv(data) >> (40 + bit) & 1 == 1
}
