//! Ollama NDJSON stream decoder: no panic, split invariance, one terminal error at most.
#![no_main]

use libfuzzer_sys::fuzz_target;
use translators::ollama::StreamDecoder;
use translators_fuzz::{check_translator, ctx, flag};

fuzz_target!(|data: &[u8]| {
    let c = ctx(flag(data, 0), flag(data, 1));
    check_translator(data, || StreamDecoder::new(c.clone()));
});
