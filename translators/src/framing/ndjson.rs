//! Newline-delimited JSON framer (Ollama native streams), fed arbitrary byte splits.
//!
//! Splits on `\n`, strips a trailing `\r`, skips blank lines; the last line may lack its `\n` and is
//! flushed by `finish`.

use bytes::Bytes;

use crate::error::TranslateError;

/// Incremental NDJSON line splitter.
#[derive(Debug)]
pub struct NdjsonFramer {
    line: Vec<u8>,
    max_line_bytes: usize,
}

impl Default for NdjsonFramer {
    fn default() -> Self {
        Self::new(super::DEFAULT_MAX_EVENT_BYTES)
    }
}

impl NdjsonFramer {
    /// A framer that fails any line longer than `max_line_bytes`.
    pub fn new(max_line_bytes: usize) -> Self {
        Self { line: Vec::new(), max_line_bytes }
    }

    /// Feeds bytes; appends every completed non-blank line (without its terminator) to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<Bytes>) -> Result<(), TranslateError> {
        while let Some(pos) = memchr::memchr(b'\n', input) {
            self.line.extend_from_slice(&input[..pos]);
            self.check_size()?;
            self.emit(out);
            input = &input[pos + 1..];
        }
        self.line.extend_from_slice(input);
        self.check_size()
    }

    /// The input ended: flushes a last line that had no `\n`.
    pub fn finish(&mut self, out: &mut Vec<Bytes>) {
        self.emit(out);
    }

    fn check_size(&self) -> Result<(), TranslateError> {
        if self.line.len() > self.max_line_bytes {
            return Err(TranslateError::Protocol("NDJSON line exceeds the size limit".into()));
        }
        Ok(())
    }

    fn emit(&mut self, out: &mut Vec<Bytes>) {
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.iter().any(|b| !b.is_ascii_whitespace()) {
            out.push(Bytes::from(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split(input: &[u8], cuts: &[usize]) -> Vec<Bytes> {
        let mut f = NdjsonFramer::default();
        let mut out = Vec::new();
        let mut start = 0;
        for &cut in cuts {
            let cut = cut.min(input.len()).max(start);
            f.feed(&input[start..cut], &mut out).unwrap();
            start = cut;
        }
        f.feed(&input[start..], &mut out).unwrap();
        f.finish(&mut out);
        out
    }

    #[test]
    fn crlf_blank_lines_and_unterminated_tail() {
        let out = split(b"{\"a\":1}\r\n\n  \n{\"b\":\"\xC3\xA9\"}", &[]);
        assert_eq!(out, vec![Bytes::from_static(b"{\"a\":1}"), Bytes::from_static(b"{\"b\":\"\xC3\xA9\"}")]);
    }

    #[test]
    fn oversized_line_is_an_error() {
        let mut f = NdjsonFramer::new(4);
        assert!(f.feed(b"123456", &mut Vec::new()).is_err());
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_lines(mut cuts in proptest::collection::vec(0usize..60, 0..10)) {
            let input = "{\"m\":\"héllo 😀\"}\r\n{\"done\":true}\n".as_bytes();
            cuts.sort_unstable();
            prop_assert_eq!(split(input, &cuts), split(input, &[]));
        }
    }
}
