//! A streamed HTTP response body on a masked route, unit by unit (sans-IO).
//!
//! The HTTP driver cuts a body into units — an SSE block, an NDJSON line, a chunk — and hands
//! each one here before it is journaled and delivered; what comes back is what the caller gets.
//! JSON in SSE `data:` and NDJSON lines goes through [`EventMasker`]; other SSE data and text
//! bodies through a [`TextStream`] per event type. A unit the masker leaves unchanged is passed
//! on byte for byte. Whole JSON documents are masked by the driver before the response head is
//! sent (see [`super::json::mask_document`]), so that a failure can still be a 502.

use std::collections::BTreeMap;
use std::sync::Arc;

use airlock_decoders::sse::{self, Event, SseDecoder};
use bytes::{Bytes, BytesMut};
use serde_json::Value;

use super::json::EventMasker;
use super::{MAX_STREAMS, MaskError, Profile, Tally, TextStream};

/// How a response body of one content type is masked.
#[derive(Debug)]
pub enum BodyMasker {
    /// `text/event-stream`.
    Sse(Box<SseMasker>),
    /// NDJSON / JSON Lines.
    Ndjson(Box<EventMasker>),
    /// Any other text: one stream over the bytes; until two have come, the bytes held back (a
    /// UTF-16 byte-order mark, which a browser obeys over the declared charset, makes the body
    /// uninspectable).
    Text(Box<TextStream>, Option<Vec<u8>>),
    /// gRPC messages, decoded with the route's descriptors.
    Grpc(Box<super::grpc::GrpcMasker>),
}

/// The state of a masked event stream.
#[derive(Debug)]
pub struct SseMasker {
    events: EventMasker,
    /// Data that is text, or a JSON string: one stream per event type.
    text: BTreeMap<TextKey, TextStream>,
    /// The JSON events carried SSE event names (Anthropic's style: the name repeats `type`).
    named: bool,
    profile: Arc<Profile>,
    tally: Arc<Tally>,
}

/// Which text stream an SSE event's data goes to: its event type, and whether the data is a
/// JSON string (decoded before it is masked, encoded again after).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum TextKey {
    Raw(Option<String>),
    Json(Option<String>),
}

/// What kind of body a content type is, for masking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// A JSON document, masked whole.
    Json,
    /// SSE.
    Sse,
    /// NDJSON.
    Ndjson,
    /// gRPC messages.
    Grpc,
    /// Text of some kind.
    Text,
    /// HTML: text whose character references are read decoded and whose bare inline tags
    /// (`<em>`) do not split words.
    Html,
    /// Other XML: text whose character references are read decoded.
    Xml,
    /// Binary content that cannot be inspected (images, archives, PDF, octet streams).
    Opaque,
}

impl BodyKind {
    /// The kind of a `Content-Type` value (`None`: no body type given, treated as text).
    pub fn of(content_type: Option<&str>) -> Self {
        let full = content_type.unwrap_or("").to_ascii_lowercase();
        // Only UTF-8 (or its ASCII subset) is scanned: the detectors read bytes.
        if let Some(charset) = full.split(';').skip(1).find_map(|p| p.trim().strip_prefix("charset=")) {
            let charset = charset.trim_matches('"');
            if !matches!(charset, "utf-8" | "utf8" | "us-ascii" | "ascii") {
                return Self::Opaque;
            }
        }
        let ct = full.split(';').next().unwrap_or("").trim().to_owned();
        match ct.as_str() {
            "text/event-stream" => Self::Sse,
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" | "application/x-jsonlines" => {
                Self::Ndjson
            }
            "application/json" => Self::Json,
            c if c.ends_with("+json") => Self::Json,
            c if c == "application/grpc" || c.starts_with("application/grpc+") => Self::Grpc,
            "text/html" | "application/xhtml+xml" => Self::Html,
            "text/xml" | "application/xml" => Self::Xml,
            c if c.ends_with("+xml") => Self::Xml,
            // Text that the detectors can read; anything else (archives, office documents,
            // DICOM, msgpack, form-encoded, gRPC-Web) is refused on a masked route.
            "" => Self::Text,
            c if c.starts_with("text/")
                || matches!(c, "application/javascript" | "application/yaml" | "application/x-yaml") =>
            {
                Self::Text
            }
            c if c.starts_with("image/")
                || c.starts_with("audio/")
                || c.starts_with("video/")
                || c.starts_with("font/")
                || matches!(
                    c,
                    "application/octet-stream"
                        | "application/pdf"
                        | "application/zip"
                        | "application/gzip"
                        | "application/x-protobuf"
                        | "application/grpc-web"
                        | "application/grpc-web+proto"
                ) =>
            {
                Self::Opaque
            }
            _ => Self::Opaque,
        }
    }
}

impl BodyMasker {
    /// The unit masker for a body of `kind` (JSON, gRPC and opaque bodies are not streamed).
    pub fn new(kind: BodyKind, profile: Arc<Profile>, tally: Arc<Tally>) -> Result<Self, MaskError> {
        Self::with_stream_fields(kind, profile, tally, Arc::from(Vec::new()))
    }

    /// The same, with the route's `stream_fields`: JSON string fields streamed in pieces
    /// across events beyond the shapes the masker knows.
    pub fn with_stream_fields(
        kind: BodyKind,
        profile: Arc<Profile>,
        tally: Arc<Tally>,
        fields: Arc<[Vec<super::PathSeg>]>,
    ) -> Result<Self, MaskError> {
        Ok(match kind {
            BodyKind::Sse => Self::Sse(Box::new(SseMasker {
                events: EventMasker::with_fields(profile.clone(), tally.clone(), fields),
                text: BTreeMap::new(),
                named: false,
                profile,
                tally,
            })),
            BodyKind::Ndjson => Self::Ndjson(Box::new(EventMasker::with_fields(profile, tally, fields))),
            BodyKind::Text => Self::Text(Box::new(profile.stream(tally)), Some(Vec::new())),
            BodyKind::Html => Self::Text(Box::new(profile.markup_stream(tally, true)), Some(Vec::new())),
            BodyKind::Xml => Self::Text(Box::new(profile.markup_stream(tally, false)), Some(Vec::new())),
            BodyKind::Json => return Err(MaskError::Uninspectable("a JSON document must be masked whole")),
            BodyKind::Grpc => return Err(MaskError::Uninspectable("gRPC messages are masked by the gRPC masker")),
            BodyKind::Opaque => {
                return Err(MaskError::Uninspectable("binary content (images, archives, PDF, octet streams)"));
            }
        })
    }

    /// Masks one unit; returns the units to send in its place (none while text is held back).
    pub fn unit(&mut self, unit: Bytes) -> Result<Vec<Bytes>, MaskError> {
        match self {
            Self::Text(s, held) => match held.take() {
                None => Ok(nonempty(s.push(&unit))),
                Some(mut head) => {
                    head.extend_from_slice(&unit);
                    if head.len() < 2 {
                        *held = Some(head);
                        return Ok(Vec::new());
                    }
                    if utf16_bom(&head) {
                        return Err(MaskError::Uninspectable("a UTF-16 text (its byte-order mark says so)"));
                    }
                    Ok(nonempty(s.push(&head)))
                }
            },
            Self::Ndjson(m) => {
                let trimmed = unit.trim_ascii();
                if trimmed.is_empty() {
                    return Ok(vec![unit]);
                }
                // Always re-serialized: a line equal after parsing may still differ in bytes (a
                // duplicate key the client would read first).
                match serde_json::from_slice::<Value>(trimmed) {
                    Ok(v) => m.event(v)?.iter().map(ndjson_line).collect(),
                    // A line that is not JSON to this reader (a lone surrogate escape, `NaN`)
                    // may be to a lenient one: refused, not scanned with its escapes unread.
                    Err(_) => Err(MaskError::Uninspectable("a JSON line that does not parse")),
                }
            }
            Self::Sse(s) => s.block(unit),
            Self::Grpc(g) => g.unit(unit),
        }
    }

    /// The end of the body: whatever was held back.
    pub fn finish(&mut self) -> Result<Vec<Bytes>, MaskError> {
        match self {
            Self::Text(s, held) => {
                let mut out = held.take().map(|head| s.push(&head)).unwrap_or_default();
                out.extend(s.finish());
                Ok(nonempty(out))
            }
            Self::Ndjson(m) => m.finish().iter().map(ndjson_line).collect(),
            Self::Sse(s) => s.flush_all(),
            Self::Grpc(g) => g.finish(),
        }
    }
}

/// Whether a body starts with a UTF-16 (or UTF-32 little-endian) byte-order mark.
pub fn utf16_bom(head: &[u8]) -> bool {
    head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF])
}

/// Whether text starts as a JSON object or array does (`{"`, `{}`, `[{`, `["`, `[[`, `[]`).
fn looks_like_json(text: &str) -> bool {
    let mut significant = text.bytes().filter(|b| !b.is_ascii_whitespace());
    matches!(
        (significant.next(), significant.next()),
        (Some(b'{'), Some(b'"' | b'}')) | (Some(b'['), Some(b'{' | b'"' | b'[' | b']'))
    )
}

fn nonempty(b: Vec<u8>) -> Vec<Bytes> {
    if b.is_empty() { Vec::new() } else { vec![Bytes::from(b)] }
}

fn ndjson_line(v: &Value) -> Result<Bytes, MaskError> {
    let mut out = serde_json::to_vec(v).map_err(MaskError::Json)?;
    out.push(b'\n');
    Ok(Bytes::from(out))
}

impl SseMasker {
    fn json_event(&self, v: &Value, like: Option<&Event>) -> Result<Bytes, MaskError> {
        let data = serde_json::to_string(v).map_err(MaskError::Json)?;
        let event = match like {
            Some(e) => Event { data, ..e.clone() },
            None => Event {
                event: if self.named { v.get("type").and_then(Value::as_str).map(str::to_owned) } else { None },
                data,
                id: None,
                retry: None,
            },
        };
        Ok(sse::encode(&event))
    }

    fn block(&mut self, unit: Bytes) -> Result<Vec<Bytes>, MaskError> {
        let mut buf = BytesMut::from(&unit[..]);
        // The unit is one block as the stream's decoder cut it: read it as that decoder did
        // (the stream's own leading byte-order mark was skipped before it; any other is content).
        let block = SseDecoder::mid_stream(unit.len().max(1)).decode_eof(&mut buf).ok().flatten();
        // What is left at the end of the body without the blank line that ends an event: the
        // standard has clients discard it, so it is not sent (nor judged without the event's
        // JSON read).
        let Some(block) = block else { return Ok(Vec::new()) };
        let Some(event) = block.event else {
            // Comments, keep-alives, `retry`/`id`-only blocks: nothing to mask but the comment
            // text, which is masked as a whole.
            let masked = self.profile.mask_text(&unit, &self.tally);
            return Ok(vec![if masked == unit[..] { unit } else { Bytes::from(masked) }]);
        };
        // The event is always re-encoded from what was masked: comment lines inside it go, and
        // its `id` is masked like any text.
        let event = Event {
            id: event.id.as_deref().map(|id| self.profile.mask_str(id, &self.tally)),
            event: event.event.as_deref().map(|name| self.profile.mask_str(name, &self.tally)),
            ..event
        };
        if event.data == "[DONE]" {
            let mut out = self.flush_all()?;
            out.push(sse::encode(&event));
            return Ok(out);
        }
        match serde_json::from_str::<Value>(&event.data) {
            // A batch (JSON-RPC over SSE, say) is a document of its own: field rules apply to it.
            Ok(v) if v.is_array() => {
                let masked = super::json::mask_document(&self.profile, event.data.as_bytes(), &self.tally)?;
                Ok(vec![sse::encode(&Event { data: super::into_string(masked), ..event })])
            }
            Ok(v) if v.is_object() => {
                self.named |= event.event.is_some();
                let mut values = self.events.event(v)?;
                let Some(last) = values.pop() else { return Ok(Vec::new()) };
                let mut out = Vec::with_capacity(values.len() + 1);
                for extra in &values {
                    out.push(self.json_event(extra, None)?);
                }
                out.push(self.json_event(&last, Some(&event))?);
                Ok(out)
            }
            // A JSON string is read as its reader will read it, `\u` escapes decoded, in a
            // stream of its own per event type (a model may stream its tokens this way).
            Ok(Value::String(text)) => {
                let masked = self.text_stream(TextKey::Json(event.event.clone()))?.push(text.as_bytes());
                if masked.is_empty() {
                    return Ok(Vec::new());
                }
                let data = serde_json::to_string(&super::into_string(masked)).map_err(MaskError::Json)?;
                Ok(vec![sse::encode(&Event { data, ..event })])
            }
            // Data that starts like a JSON object or array but does not parse (`NaN`, a lone
            // surrogate escape) may parse for a lenient client: refused, not read as text.
            Err(_) if looks_like_json(&event.data) => {
                Err(MaskError::Uninspectable("SSE data that reads like JSON but does not parse"))
            }
            _ => {
                let masked = self.text_stream(TextKey::Raw(event.event.clone()))?.push(event.data.as_bytes());
                if masked.is_empty() {
                    return Ok(Vec::new());
                }
                let data = super::into_string(masked);
                Ok(vec![sse::encode(&Event { data, ..event })])
            }
        }
    }

    /// The text stream of one event type; a response may not open more than
    /// [`MAX_STREAMS`]: past them it is cut off.
    fn text_stream(&mut self, key: TextKey) -> Result<&mut TextStream, MaskError> {
        if !self.text.contains_key(&key) && self.text.len() >= MAX_STREAMS {
            return Err(MaskError::TooManyStreams(MAX_STREAMS));
        }
        Ok(self.text.entry(key).or_insert_with(|| self.profile.stream(self.tally.clone())))
    }

    fn flush_all(&mut self) -> Result<Vec<Bytes>, MaskError> {
        let mut out = Vec::new();
        for v in self.events.finish() {
            out.push(self.json_event(&v, None)?);
        }
        for (key, mut stream) in std::mem::take(&mut self.text) {
            let rest = stream.finish();
            if !rest.is_empty() {
                let rest = super::into_string(rest);
                let (event, data) = match key {
                    TextKey::Raw(name) => (name, rest),
                    TextKey::Json(name) => (name, serde_json::to_string(&rest).map_err(MaskError::Json)?),
                };
                out.push(sse::encode(&Event { event, data, id: None, retry: None }));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::{Detector, ProfileSpec};

    fn masker(kind: BodyKind) -> BodyMasker {
        let det = Arc::new(Detector::new(&[], &[]).unwrap());
        let spec = ProfileSpec::redact_all("t");
        let p = Arc::new(Profile::new(det, spec, None).unwrap());
        BodyMasker::new(kind, p, Arc::new(Tally::default())).unwrap()
    }

    fn run(m: &mut BodyMasker, units: &[&str]) -> String {
        let mut out = Vec::new();
        for u in units {
            out.extend(m.unit(Bytes::copy_from_slice(u.as_bytes())).unwrap());
        }
        out.extend(m.finish().unwrap());
        out.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect()
    }

    #[test]
    fn sse_json_deltas_are_rewritten_and_comments_and_done_pass() {
        let mut m = masker(BodyKind::Sse);
        let ev = |c: &str| format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{c}\"}}}}]}}\n\n");
        let out = run(&mut m, &[": keep-alive\n\n", &ev("ok, "), &ev("SSN 123-45"), &ev("-6789."), "data: [DONE]\n\n"]);
        assert!(out.starts_with(": keep-alive\n\n") && out.contains(r#"{"content":"ok, "}"#), "{out}");
        assert!(out.contains("[PHI:SSN]") && !out.contains("6789"), "{out}");
        assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
        let blocks = sse::decode_all(out.as_bytes(), 7).unwrap();
        assert!(
            blocks
                .iter()
                .filter_map(|b| b.event.as_ref())
                .all(|e| e.data == "[DONE]" || serde_json::from_str::<Value>(&e.data).is_ok())
        );
    }

    #[test]
    fn the_done_block_and_json_batches_are_masked_too() {
        let mut m = masker(BodyKind::Sse);
        let out = run(&mut m, &["id: 219-09-9999\nevent: SSN 219-09-9999\n: SSN 219-09-9999\ndata: [DONE]\n\n"]);
        assert!(out.contains("data: [DONE]") && !out.contains("219-09"), "{out}");
        // A batch gets the field rules a document gets: `diagnosis` is dropped, not scanned.
        let det = Arc::new(Detector::new(&[], &[]).unwrap());
        let rule = crate::mask::FieldRule {
            selector: crate::mask::FieldSelector::Key("diagnosis".into()),
            action: crate::mask::Action::Drop,
            label: "diagnosis".into(),
        };
        let spec = ProfileSpec { fields: vec![rule], ..ProfileSpec::redact_all("t") };
        let p = Arc::new(Profile::new(det, spec, None).unwrap());
        let mut m = BodyMasker::new(BodyKind::Sse, p, Arc::new(Tally::default())).unwrap();
        let out = run(&mut m, &["data: [{\"diagnosis\":\"HIV\",\"note\":\"SSN 219-09-9999\"},{\"note\":\"ok\"}]\n\n"]);
        assert!(out.contains("[PHI:SSN]") && !out.contains("219-09") && !out.contains("HIV"), "{out}");
        let data = sse::decode_all(out.as_bytes(), 7).unwrap()[0].event.as_ref().unwrap().data.clone();
        assert!(serde_json::from_str::<Value>(&data).unwrap().is_array(), "{data}");
    }

    #[test]
    fn plain_text_sse_and_text_bodies_hold_a_split_value() {
        let mut m = masker(BodyKind::Sse);
        let out = run(&mut m, &["data: mail jo\n\n", "data: e@example.com now\n\n"]);
        assert!(out.contains("[PHI:EMAIL]") && !out.contains("example.com"), "{out}");
        let mut t = masker(BodyKind::Text);
        assert_eq!(run(&mut t, &["tel 617-55", "5-0123 end"]), "tel [PHI:PHONE] end");
    }

    #[test]
    fn json_string_data_is_read_decoded_and_joined_across_events() {
        let mut m = masker(BodyKind::Sse);
        let out = run(&mut m, &["data: \"mail jane\\u0040exam\"\n\n", "data: \"ple.org now\"\n\n"]);
        assert!(out.contains("[PHI:EMAIL]") && !out.contains("example") && !out.contains("ple.org"), "{out}");
        for block in sse::decode_all(out.as_bytes(), 7).unwrap() {
            let data = block.event.unwrap().data;
            assert!(serde_json::from_str::<Value>(&data).unwrap().is_string(), "{data}");
        }
    }

    #[test]
    fn a_utf16_text_is_refused_however_it_is_cut() {
        let utf16: Vec<u8> = "\u{feff}SSN 219-09-9999".encode_utf16().flat_map(u16::to_le_bytes).collect();
        for kind in [BodyKind::Text, BodyKind::Html, BodyKind::Xml] {
            let mut m = masker(kind);
            assert!(m.unit(Bytes::copy_from_slice(&utf16[..1])).unwrap().is_empty(), "one byte says nothing yet");
            assert!(matches!(m.unit(Bytes::copy_from_slice(&utf16[1..])), Err(MaskError::Uninspectable(_))));
            let mut be = masker(kind);
            assert!(be.unit(Bytes::from_static(&[0xFE, 0xFF, 0, b'2'])).is_err());
        }
        // A UTF-8 byte-order mark is UTF-8.
        let mut m = masker(BodyKind::Text);
        assert_eq!(run(&mut m, &["\u{feff}SSN 219-09-9999"]), "\u{feff}SSN [PHI:SSN]");
    }

    #[test]
    fn json_this_reader_cannot_read_is_refused_not_scanned_as_text() {
        // Python's `json` writes and reads `NaN`; serde_json reads neither `NaN` nor a lone
        // surrogate escape, whose neighbours a lenient client would still decode.
        for bad in ["{\"t\":\"SSN:\\n219-09-9999\",\"x\":NaN}", "{\"n\":\"\\ud800 jane\\u0040example.org\"}"] {
            let mut m = masker(BodyKind::Ndjson);
            assert!(matches!(m.unit(Bytes::from(format!("{bad}\n"))), Err(MaskError::Uninspectable(_))), "{bad}");
            let mut m = masker(BodyKind::Sse);
            assert!(matches!(m.unit(Bytes::from(format!("data: {bad}\n\n"))), Err(MaskError::Uninspectable(_))));
        }
        // Text that only starts with a bracket is text.
        let mut m = masker(BodyKind::Sse);
        let out = run(&mut m, &["data: [1/3] step done\n\n"]);
        let text: String =
            sse::decode_all(out.as_bytes(), 64).unwrap().into_iter().filter_map(|b| b.event).map(|e| e.data).collect();
        assert_eq!(text, "[1/3] step done");
    }

    #[test]
    fn a_byte_order_mark_mid_stream_does_not_hide_an_event() {
        let mut m = masker(BodyKind::Sse);
        let out = run(&mut m, &["data: {\"ok\":1}\n\n", "\u{feff}\ndata: {\"n\":\"jane\\u0040example.org\"}\n\n"]);
        assert!(!out.contains("example") && !out.contains("\\u0040"), "{out}");
    }

    #[test]
    fn an_unterminated_last_event_is_not_sent() {
        // Clients discard it (the standard says so); its JSON is not there to be read.
        let mut m = masker(BodyKind::Sse);
        let tail = "data: {\"note\":\"jane\\u0040example.org\"}\n";
        assert_eq!(run(&mut m, &["data: {\"ok\":1}\n\n", tail]), "data: {\"ok\":1}\n\n");
    }

    #[test]
    fn too_many_event_types_fail_closed() {
        let mut m = masker(BodyKind::Sse);
        for i in 0..MAX_STREAMS {
            m.unit(Bytes::from(format!("event: e{i}\ndata: 219\n\n"))).unwrap();
        }
        let err = m.unit(Bytes::from_static(b"event: last\ndata: 219\n\n")).unwrap_err();
        assert!(matches!(err, MaskError::TooManyStreams(_)), "{err}");
    }

    #[test]
    fn a_highlight_with_attributes_or_a_comment_does_not_split_a_value() {
        let page = "<p>SSN 219<mark class=\"hl\">-09</mark>-9999 and 078<!-- x -->-05-1120 <i title=\"Dr. Emily Chen\">x</i></p>";
        let out = run(&mut masker(BodyKind::Html), &[page]);
        assert_eq!(
            out,
            "<p>SSN [PHI:SSN]<mark class=\"hl\"></mark> and [PHI:SSN]<!-- x --> <i title=\"Dr. [PHI:PERSON]\">x</i></p>"
        );
    }

    #[test]
    fn markup_is_judged_with_references_decoded_and_sent_as_written() {
        let page = "<p title=\"a&amp;b\">Write to <a href=\"mailto:jane&#64;example.org\">jane&#x40;example&period;org</a>, \
                    SSN 219&#45;09&#45;9999 &copy; &#169; &lt;b&gt; or <em>078</em>-05-<b>1121</b>.</p>";
        let whole = run(&mut masker(BodyKind::Html), &[page]);
        assert_eq!(
            whole,
            "<p title=\"a&amp;b\">Write to <a href=\"mailto:[PHI:EMAIL]\">[PHI:EMAIL]</a>, SSN [PHI:SSN] &copy; &#169; \
             &lt;b&gt; or <em>[PHI:SSN]</em><b></b>.</p>"
        );
        // Every cut, through references too, gives the same bytes.
        for cut in 0..=page.len() {
            assert_eq!(run(&mut masker(BodyKind::Html), &[&page[..cut], &page[cut..]]), whole, "cut at {cut}");
        }
        // As plain text, the references hide both.
        let plain = run(&mut masker(BodyKind::Text), &[page]);
        assert!(
            plain.contains("jane&#x40;example&period;org") && plain.contains("9999") && plain.contains("1121"),
            "{plain}"
        );
        assert_eq!(BodyKind::of(Some("text/html; charset=utf-8")), BodyKind::Html);
        assert_eq!(BodyKind::of(Some("application/atom+xml")), BodyKind::Xml);
        assert_eq!(BodyKind::of(Some("text/plain")), BodyKind::Text);
    }

    #[test]
    fn inline_tags_are_kept_once_and_never_glue_what_they_separate() {
        let html = |units: &[&str]| run(&mut masker(BodyKind::Html), units);
        // Tags after the last character are written once, by the end.
        assert_eq!(html(&["Call <em>617-555-0199</em>"]), "Call <em>[PHI:PHONE]</em>");
        assert_eq!(html(&["Call <em>617-555-0199", "</em>"]), "Call <em>[PHI:PHONE]</em>");
        assert_eq!(html(&["<em>", "</em>"]), "<em></em>");
        // A tag between two letters or digits still separates them, as `>` did before.
        assert_eq!(html(&["<b>SSN</b>219-09-9999"]), "<b>SSN</b>[PHI:SSN]");
        assert_eq!(html(&["219-09-9999<sup>1</sup>"]), "[PHI:SSN]<sup>1</sup>");
        assert_eq!(html(&["<a>219-09-9999</a><b>617-555-0199</b>"]), "<a>[PHI:SSN]</a><b>[PHI:PHONE]</b>");
        // In other XML, `<data>` is an element like any other: its tags stay in the text.
        assert_eq!(run(&mut masker(BodyKind::Xml), &["<data>219-09-9999</data>"]), "<data>[PHI:SSN]</data>");
        assert_eq!(run(&mut masker(BodyKind::Xml), &["<b>219</b>-09-9999"]), "<b>219</b>-09-9999");
        // `partial` writes the value's own separators, not the space that stands for a tag.
        let det = Arc::new(Detector::new(&[], &[]).unwrap());
        let spec = ProfileSpec {
            actions: vec![("CREDIT_CARD".into(), crate::mask::Action::Partial(4))],
            ..ProfileSpec::redact_all("t")
        };
        let p = Arc::new(Profile::new(det, spec, None).unwrap());
        let mut m = BodyMasker::new(BodyKind::Html, p, Arc::new(Tally::default())).unwrap();
        assert_eq!(run(&mut m, &["Card 4111 1111 1111<b>1111</b>."]), "Card **** **** ****1111<b></b>.");
        // A run of tags with no text between them does not hold the stream back.
        let mut m = masker(BodyKind::Html);
        let out = m.unit(Bytes::from("<b>".repeat(10_000))).unwrap();
        assert!(out.iter().map(Bytes::len).sum::<usize>() > 29_000, "the run is emitted as it comes");
    }

    #[test]
    fn a_long_page_streams_in_any_pieces_and_passes_unmasked_bytes_as_written() {
        let clean: String =
            (0..400).map(|i| format!("<li>item&nbsp;{i} &amp; &#8212; caf&eacute; &#x2F; x</li>\n")).collect();
        let dirty: String = (0..300)
            .map(|i| format!("<li>{i}: jane{i}&#64;example&period;org, <em>219</em>&#45;09&#45;9999</li>\n"))
            .collect();
        assert!(clean.len() > 15_000 && dirty.len() > 15_000, "longer than the look-behind many times");
        for (page, masked) in [(&clean, false), (&dirty, true)] {
            let whole = run(&mut masker(BodyKind::Html), &[page]);
            for size in [1, 7, 64, 1000, 5000] {
                let pieces: Vec<&str> = page.as_bytes().chunks(size).map(|c| std::str::from_utf8(c).unwrap()).collect();
                assert_eq!(run(&mut masker(BodyKind::Html), &pieces), whole, "pieces of {size}");
            }
            if masked {
                assert!(!whole.contains("example") && !whole.contains("9999"), "{}", &whole[..300]);
                assert_eq!(whole.matches("[PHI:EMAIL]").count(), 300);
                assert_eq!(whole.matches("<em>[PHI:SSN]</em>").count(), 300);
            } else {
                assert_eq!(&whole, page);
            }
        }
    }

    #[test]
    fn opaque_and_grpc_bodies_are_refused() {
        assert_eq!(BodyKind::of(Some("image/png")), BodyKind::Opaque);
        assert_eq!(BodyKind::of(Some("application/fhir+json; charset=utf-8")), BodyKind::Json);
        assert_eq!(BodyKind::of(None), BodyKind::Text);
        let det = Arc::new(Detector::new(&[], &[]).unwrap());
        let spec = ProfileSpec::redact_all("t");
        let p = Arc::new(Profile::new(det, spec, None).unwrap());
        assert!(BodyMasker::new(BodyKind::Opaque, p, Arc::new(Tally::default())).is_err());
    }
}
