//! OpenAI pass-through stream (usage-stripping SSE forwarder): no panic, split invariance.
#![no_main]

use libfuzzer_sys::fuzz_target;
use translators::openai::passthrough::StreamPassthrough;
use translators_fuzz::{check_translator, flag};

fuzz_target!(|data: &[u8]| {
    let wants_usage = flag(data, 0);
    check_translator(data, || StreamPassthrough::new(wants_usage));
});
