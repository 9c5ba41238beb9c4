//! Identifier helpers shared by the provider translators. Randomness comes from the caller.

/// Alphabet of generated tool-call ids, matching Anthropic's `^[a-zA-Z0-9_-]+$` and OpenAI's `call_…` style.
const ID_ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Builds `call_<8 chars>` from a seed and a counter, deterministic for tests.
/// Callers seed it with a per-request random number so ids are unique across requests.
pub fn tool_call_id(seed: u64, counter: u32) -> String {
    // Mix the counter through the finalizer first: a plain `seed ^ counter * k` start makes consecutive
    // counters walk the same splitmix sequence, shifted by one step.
    let mut x = mix(seed ^ mix(u64::from(counter).wrapping_add(0xD1B5_4A32_D192_ED03)));
    let mut id = String::with_capacity(5 + 24);
    id.push_str("call_");
    for _ in 0..24 {
        // splitmix64 step: cheap, well-distributed, no dependency.
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        id.push(char::from(ID_ALPHABET[(mix(x) % 36) as usize]));
    }
    id
}

/// The splitmix64 finalizer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_well_formed() {
        let a = tool_call_id(42, 0);
        let b = tool_call_id(42, 1);
        assert_ne!(a, b);
        // Consecutive counters must not be shifted copies of each other.
        assert_ne!(&a[6..], &b[5..b.len() - 1]);
        assert_ne!(&b[6..], &a[5..a.len() - 1]);
        assert!(a.starts_with("call_"));
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_'));
        assert_eq!(a, tool_call_id(42, 0));
    }
}
