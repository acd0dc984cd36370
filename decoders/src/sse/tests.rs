use proptest::prelude::*;

use super::*;

fn events(input: &[u8]) -> Vec<Event> {
    decode_all(input, input.len().max(1)).unwrap().into_iter().filter_map(|b| b.event).collect()
}

fn ev(data: &str) -> Event {
    Event { data: data.into(), ..Event::default() }
}

/// The examples of the HTML Living Standard §9.2.5–9.2.6, as golden fixtures.
#[test]
fn the_standards_examples() {
    assert_eq!(events(b"data: YHOO\ndata: +2\ndata: 10\n\n"), [ev("YHOO\n+2\n10")]);
    let second = Event { id: Some(String::new()), ..ev("second event") };
    assert_eq!(
        events(b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n"),
        [Event { id: Some("1".into()), ..ev("first event") }, second, ev(" third event")]
    );
    // The last block has no blank line after it: it is discarded.
    assert_eq!(events(b"data\n\ndata\ndata\n\ndata:"), [ev(""), ev("\n")]);
    assert_eq!(events(b"data:test\n\ndata: test\n\n"), [ev("test"), ev("test")]);
    let typed = events(b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\n");
    assert_eq!(typed[0].event.as_deref(), Some("add"));
    assert_eq!(typed[1], Event { event: Some("remove".into()), ..ev("2153") });
}

#[test]
fn cr_lf_and_crlf_are_all_line_ends() {
    let lf = b"event: e\ndata: a\ndata: b\n\n".to_vec();
    let crlf = b"event: e\r\ndata: a\r\ndata: b\r\n\r\n".to_vec();
    let cr = b"event: e\rdata: a\rdata: b\r\r".to_vec();
    let mixed = b"event: e\r\ndata: a\rdata: b\n\r\n".to_vec();
    let expected = vec![Event { event: Some("e".into()), ..ev("a\nb") }];
    for input in [lf, crlf, cr, mixed] {
        assert_eq!(events(&input), expected, "{:?}", String::from_utf8_lossy(&input));
    }
}

#[test]
fn comments_retry_and_a_bom() {
    let blocks = decode_all(b"\xEF\xBB\xBF: keep-alive\n\nretry: 3000\n\nretry: 12x\ndata: d\n\n", 1).unwrap();
    assert_eq!(blocks.len(), 3);
    assert_eq!((blocks[0].event.as_ref(), &blocks[0].raw[..]), (None, &b": keep-alive\n\n"[..]));
    assert_eq!((blocks[1].event.as_ref(), blocks[1].retry), (None, Some(3000)));
    assert_eq!(blocks[2].event.as_ref().map(|e| e.retry), Some(None), "non-digits are ignored");
    // An id with NUL is ignored; unknown fields are ignored.
    assert_eq!(events(b"id: a\0b\nfoo: bar\ndata: x\n\n"), [ev("x")]);
}

#[test]
fn every_prefix_waits_then_gives_the_same_block() {
    let input = b"event: chunk\r\nid: 7\r\ndata: {\"delta\":\"Hel\"}\r\ndata: more\r\n\r\n";
    for i in 0..input.len() {
        let mut buf = BytesMut::from(&input[..i]);
        assert_eq!(SseDecoder::default().decode(&mut buf), Ok(None), "prefix {i}");
        assert_eq!(&buf[..], &input[..i], "buffer untouched at prefix {i}");
    }
    let mut buf = BytesMut::from(&input[..]);
    let block = SseDecoder::default().decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty());
    assert_eq!(&block.raw[..], &input[..]);
    let e = block.event.unwrap();
    assert_eq!(
        (e.event.as_deref(), e.id.as_deref(), e.data.as_str()),
        (Some("chunk"), Some("7"), "{\"delta\":\"Hel\"}\nmore")
    );
}

#[test]
fn a_final_cr_is_resolved_at_end_of_stream() {
    let mut dec = SseDecoder::default();
    let mut buf = BytesMut::from(&b"data: x\r\r"[..]);
    assert_eq!(dec.decode(&mut buf), Ok(None), "the last CR could be half of a CRLF");
    let block = dec.decode_eof(&mut buf).unwrap().unwrap();
    assert_eq!(block.event, Some(ev("x")));
    assert!(buf.is_empty());
}

#[test]
fn oversized_blocks_are_refused() {
    let mut dec = SseDecoder::new(16);
    let mut buf = BytesMut::from(&b"data: 0123456789abcdef"[..]);
    assert!(matches!(dec.decode(&mut buf), Err(DecodeError::TooLong { what: "SSE event", .. })));
    let mut dec = SseDecoder::new(16);
    let mut buf = BytesMut::from(&b"data: 0123456789abcdef\n\n"[..]);
    assert!(matches!(dec.decode(&mut buf), Err(DecodeError::TooLong { .. })));
    let mut dec = SseDecoder::new(16);
    let mut buf = BytesMut::from(&b"data: 0123456\n\n"[..]);
    assert!(dec.decode(&mut buf).unwrap().is_some(), "exactly at the limit is fine");
}

#[test]
fn fuzz_seed_corpus_never_panics() {
    crate::testutil::seed_corpus("sse_stream", 3, fuzz_stream);
}

fn arb_event() -> impl Strategy<Value = Event> {
    (
        proptest::option::of("[a-z]{1,8}"),
        "[ -~\n]{0,64}",
        proptest::option::of("[ -~]{0,8}"),
        proptest::option::of(0u64..100_000),
    )
        .prop_map(|(event, data, id, retry)| Event { event, data, id, retry })
}

proptest! {
    #[test]
    fn encode_then_decode_round_trips(e in arb_event()) {
        let mut buf = BytesMut::from(&encode(&e)[..]);
        let block = SseDecoder::default().decode(&mut buf).unwrap().unwrap();
        prop_assert!(buf.is_empty());
        prop_assert_eq!(block.event, Some(e));
    }

    #[test]
    fn splitting_never_changes_the_result(es in proptest::collection::vec(arb_event(), 0..6), step in 1usize..40) {
        let stream: Vec<u8> = es.iter().flat_map(|e| encode(e).to_vec()).collect();
        let whole = decode_all(&stream, stream.len().max(1)).unwrap();
        let split = decode_all(&stream, step).unwrap();
        prop_assert_eq!(&whole, &split);
        prop_assert_eq!(whole.into_iter().filter_map(|b| b.event).collect::<Vec<_>>(), es);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzz_stream(&data);
    }
}

/// A block arriving byte by byte is scanned once: each call starts where the last stopped,
/// and the block reads the same as when it arrives whole (CR LF split between calls too).
#[test]
fn a_block_arriving_in_pieces_is_scanned_once() {
    let text = b"data: one\r\ndata: two\r\n\r\ndata: three\n\n";
    let mut dec = SseDecoder::default();
    let mut buf = BytesMut::new();
    let mut blocks = Vec::new();
    for &b in text.iter() {
        buf.extend_from_slice(&[b]);
        while let Some(block) = dec.decode(&mut buf).unwrap() {
            blocks.push(block);
        }
        // Nothing buffered is scanned again, bar a CR waiting for its LF.
        assert!(dec.scanned.0 + 1 >= buf.len(), "{:?} of {}", dec.scanned, buf.len());
    }
    assert_eq!(blocks, decode_all(text, 1024).unwrap());
}
