//! Anthropic stream decoder (SSE → OpenAI chunks): no panic, split invariance, one terminal error at most.
#![no_main]

use libfuzzer_sys::fuzz_target;
use translators::anthropic::StreamDecoder;
use translators_fuzz::{check_translator, ctx, flag};

fuzz_target!(|data: &[u8]| {
    let c = ctx(flag(data, 0), flag(data, 1));
    if flag(data, 2) {
        check_translator(data, || StreamDecoder::with_json_mode(c.clone(), translators::anthropic::JSON_TOOL_NAME));
    } else {
        check_translator(data, || StreamDecoder::new(c.clone()));
    }
});
