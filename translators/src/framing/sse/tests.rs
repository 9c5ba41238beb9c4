use super::*;
use proptest::prelude::*;

fn frame_whole(input: &[u8]) -> Vec<SseEvent> {
    let mut f = SseFramer::default();
    let mut out = Vec::new();
    f.feed(input, &mut out).unwrap();
    f.finish(&mut out);
    out
}

fn frame_split(input: &[u8], cuts: &[usize]) -> Vec<SseEvent> {
    let mut f = SseFramer::default();
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

fn ev(event: &str, data: &str) -> SseEvent {
    SseEvent { event: event.into(), data: Bytes::copy_from_slice(data.as_bytes()) }
}

#[test]
fn lf_crlf_and_cr_endings_frame_identically() {
    let lf = b"event: a\ndata: {\"x\":1}\n\ndata: two\n\n";
    let crlf = b"event: a\r\ndata: {\"x\":1}\r\n\r\ndata: two\r\n\r\n";
    let cr = b"event: a\rdata: {\"x\":1}\r\rdata: two\r\r";
    let expected = vec![ev("a", "{\"x\":1}"), ev("", "two")];
    assert_eq!(frame_whole(lf), expected);
    assert_eq!(frame_whole(crlf), expected);
    assert_eq!(frame_whole(cr), expected);
}

#[test]
fn comments_bom_no_space_and_multiline_data() {
    let input = "\u{FEFF}: keep-alive\ndata:{\"a\":\ndata: 1}\n\n: ping\n\n".as_bytes();
    assert_eq!(frame_whole(input), vec![ev("", "{\"a\":\n1}")]);
}

#[test]
fn event_without_data_is_not_dispatched_and_event_name_resets() {
    let input = b"event: ping\n\ndata: x\n\n";
    assert_eq!(frame_whole(input), vec![ev("", "x")]);
}

#[test]
fn last_event_without_blank_line_is_flushed_at_finish() {
    assert_eq!(frame_whole(b"data: tail"), vec![ev("", "tail")]);
}

#[test]
fn oversized_event_is_an_error() {
    let mut f = SseFramer::new(8);
    let mut out = Vec::new();
    assert!(f.feed(b"data: 0123456789", &mut out).is_err());
}

#[test]
fn crlf_split_between_feeds_is_one_line_ending() {
    let input = b"data: a\r\n\r\ndata: b\r\n\r\n";
    for cut in 0..input.len() {
        assert_eq!(frame_split(input, &[cut]), vec![ev("", "a"), ev("", "b")], "cut at {cut}");
    }
}

proptest! {
    #[test]
    fn any_split_gives_the_same_events(cuts in proptest::collection::vec(0usize..120, 0..12)) {
        let input = "event: message_start\r\ndata: {\"t\":\"héllo ✓ 😀\"}\r\n\r\n: c\n\ndata: a\ndata: b\n\n".as_bytes();
        let mut cuts = cuts;
        cuts.sort_unstable();
        prop_assert_eq!(frame_split(input, &cuts), frame_whole(input));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut f = SseFramer::new(256);
        let mut out = Vec::new();
        let _ = f.feed(&bytes, &mut out);
        f.finish(&mut out);
    }
}
