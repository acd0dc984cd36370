//! `_method` fields in `multipart/form-data` bodies. Rails (Rack::MethodOverride), Laravel and
//! Symfony run the method a `_method` field names in place of POST, from a multipart body as from
//! a form-encoded one, so the policy must see it.
//!
//! The first bytes of the body (up to the route's inspection limit) are read before the decision
//! and every `_method` part in them is judged. A body longer than that goes on after them through
//! [`Scanned`], which breaks the body off before a later part whose headers name `_method`: the
//! upstream never receives a whole request that carries a method no rule saw. The part headers
//! are matched loosely (any header block that mentions `_method`, also percent-encoded), and
//! delimiters are found after a bare LF as after CRLF, so that a lenient parser finds no part this
//! reading missed.

use bytes::Bytes;

/// Longest header block of one part; a longer one is refused (Rack's limit is lower).
const HEADERS_MAX: usize = 16 * 1024;

/// The boundary of a multipart content type: `Some(None)` when the type is multipart but names no
/// boundary every parser reads the same way, `None` when it is not multipart. Any `multipart/*`
/// type counts: Rack parses every one of them for form fields, not only `multipart/form-data`.
///
/// Parsers disagree on odd boundaries (Rack takes the last `boundary=`, PHP the first substring
/// `boundary`; PHP cuts at a comma, a leading space is kept by some), so only one plain boundary
/// is accepted: the word `boundary` once, its value of RFC 2046 characters with no space at either
/// end and no comma. Anything else is refused, not forwarded uninspected.
pub(crate) fn boundary(content_type: &str) -> Option<Option<String>> {
    let mut params = content_type.split(';');
    let kind = params.next()?.trim().as_bytes();
    if kind.len() < 10 || !kind[..10].eq_ignore_ascii_case(b"multipart/") {
        return None;
    }
    if content_type.to_ascii_lowercase().matches("boundary").count() != 1 {
        return Some(None);
    }
    let value = params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("boundary").then_some(v)
    });
    let plain = |b: &str| {
        !b.is_empty()
            && b.len() <= 70
            && !b.starts_with(' ')
            && !b.ends_with(' ')
            && b.bytes().all(|c| c.is_ascii_alphanumeric() || b"'()+_-./:=? ".contains(&c))
    };
    Some(value.map(|v| v.trim_start_matches(' ').trim_end()).and_then(|v| {
        let unquoted = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
        plain(unquoted).then(|| unquoted.to_owned())
    }))
}

/// The next delimiter line (`--boundary` at the start of a line) at or after `from`. `start` says
/// whether `buf[0]` is the start of the body.
fn next_delim(buf: &[u8], from: usize, delim: &[u8], start: bool) -> Option<usize> {
    let mut i = from;
    while let Some(rel) = memchr::memmem::find(buf.get(i..)?, delim) {
        let p = i + rel;
        if (p == 0 && start) || (p > 0 && buf[p - 1] == b'\n') {
            return Some(p);
        }
        i = p + 1;
    }
    None
}

/// The end (past the blank line) of the header block of the part whose delimiter line starts at
/// `p`. `None` while it is incomplete; `Some(Err)` when too long. Parsers differ on what ends
/// the block (Rack only `\r\n\r\n`, others a bare LF too): it ends at the later of the two, so
/// a header hidden between them is read; in a body that ends first, at its end.
fn headers_at(buf: &[u8], p: usize, whole: bool) -> Option<Result<usize, ()>> {
    let too_long = |end: usize| end - p > HEADERS_MAX;
    let incomplete = || if whole { Some(Ok(buf.len())) } else { too_long(buf.len()).then_some(Err(())) };
    let Some(nl) = memchr::memchr(b'\n', &buf[p..]) else { return incomplete() };
    let mut i = p + nl + 1;
    let lf_end = loop {
        let Some(nl) = memchr::memchr(b'\n', &buf[i..]) else { return incomplete() };
        let line = &buf[i..i + nl];
        if line.is_empty() || line == b"\r" {
            break i + nl + 1;
        }
        if too_long(i + nl + 1) {
            return Some(Err(()));
        }
        i += nl + 1;
    };
    // The CRLF blank line: the one just found, or a later one.
    let crlf_end = match memchr::memmem::find(&buf[p..], b"\r\n\r\n") {
        Some(rel) => p + rel + 4,
        None => return incomplete(),
    };
    let end = lf_end.max(crlf_end);
    if too_long(end) { Some(Err(())) } else { Some(Ok(end)) }
}

/// Whether a part's headers (or a delimiter line's tail) could name the field `_method`: read as
/// the frameworks read a name (Rack drops backslash escapes, PHP turns `.` and spaces into `_`,
/// RFC 2231 names are percent-encoded), `_method` standing alone, not inside a longer name such
/// as `payment_method`.
fn names_method(headers: &[u8]) -> bool {
    let mut norm: Vec<u8> = Vec::with_capacity(headers.len());
    for &b in headers {
        match b.to_ascii_lowercase() {
            b'\\' => {}
            b'.' | b' ' => norm.push(b'_'),
            c => norm.push(c),
        }
    }
    let word = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_';
    [&b"_method"[..], b"%5fmethod"].iter().any(|needle| {
        memchr::memmem::find_iter(&norm, needle).any(|at| {
            let before = at.checked_sub(1).and_then(|i| norm.get(i));
            !before.is_some_and(word) && !norm.get(at + needle.len()).is_some_and(word)
        })
    })
}

/// What the first bytes of a multipart body ask for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Prefix {
    /// The method of each `_method` field, in upper case.
    pub methods: Vec<String>,
    /// Parts whose delimiter starts before this offset were judged here; [`Scanned`] reads the
    /// rest.
    pub judged: usize,
}

/// The `_method` fields in `body`, the first bytes of a multipart body (`whole` when that is all
/// of it). An error names a `_method` field that cannot be read within these bytes.
pub(crate) fn method_fields(boundary: &str, body: &[u8], whole: bool) -> Result<Prefix, String> {
    let delim = [b"--", boundary.as_bytes()].concat();
    let mut methods = Vec::new();
    let mut from = 0;
    while let Some(p) = next_delim(body, from, &delim, true) {
        let end = match headers_at(body, p, whole) {
            Some(Ok(end)) => end,
            Some(Err(())) => return Err("a multipart part's headers are too long to inspect".into()),
            // Headers cut by the end: the reader after the decision judges them (or, in a whole
            // body, no parser reads a part there; one that mentions `_method` is refused anyway).
            None if whole && names_method(&body[p..]) => {
                return Err("a multipart body ends inside the headers of a `_method` field".into());
            }
            None => return Ok(Prefix { methods, judged: p }),
        };
        if names_method(&body[p + delim.len()..end]) {
            if end == body.len() {
                return Err("a multipart body ends inside the headers of a `_method` field".into());
            }
            let value_end = match next_delim(body, end, &delim, true) {
                Some(q) => q,
                None if whole => body.len(),
                None => {
                    return Err("a `_method` field in a multipart body runs past the bytes this route inspects".into());
                }
            };
            let value = String::from_utf8_lossy(&body[end..value_end]);
            methods.push(value.trim().to_ascii_uppercase());
        }
        from = end;
    }
    // Not whole: a delimiter may be cut by the end of these bytes, and the scan judges it.
    let judged = if whole { body.len() } else { from.max(body.len().saturating_sub(delim.len() + 1)) };
    Ok(Prefix { methods, judged })
}

/// Reads a multipart body as it goes upstream, for parts past the judged first bytes.
#[derive(Debug)]
pub(crate) struct Scan {
    delim: Vec<u8>,
    /// Bytes not yet settled: a delimiter or header block that may continue in the next piece.
    buf: Vec<u8>,
    /// Offset of `buf[0]` in the body.
    base: usize,
    /// Parts that start before this offset were judged before the body went on.
    judged: usize,
    /// While a header block is incomplete: the length `buf` must reach before it is read again.
    /// It doubles, so a block sent a byte at a time is read a logarithmic number of times, not
    /// once per byte (up to 16 KiB each time).
    retry_at: usize,
}

impl Scan {
    pub(crate) fn new(boundary: &str, judged: usize) -> Self {
        Self { delim: [b"--", boundary.as_bytes()].concat(), buf: Vec::new(), base: 0, judged, retry_at: 0 }
    }

    /// The next piece of the body; an error when it holds the headers of a `_method` part that was
    /// not judged, or headers too long to read.
    pub(crate) fn feed(&mut self, piece: &[u8]) -> Result<(), String> {
        self.buf.extend_from_slice(piece);
        if self.buf.len() < self.retry_at {
            return Ok(());
        }
        self.retry_at = 0;
        let mut from = 0;
        let keep_from = loop {
            let Some(p) = next_delim(&self.buf, from, &self.delim, self.base == 0) else {
                // A delimiter may be cut by the end: keep its room and the line break before it
                // (before `from` too: a delimiter may start right after the last header block).
                break self.buf.len().saturating_sub(self.delim.len() + 1).max(from.saturating_sub(1));
            };
            match headers_at(&self.buf, p, false) {
                None => {
                    // Kept from the line break before the delimiter; read again once the block has
                    // doubled, or at the latest once it is too long.
                    // (`held` is at most HEADERS_MAX here: a longer block is an error.)
                    let kept = p.saturating_sub(1);
                    let held = self.buf.len() - p;
                    self.retry_at = self.buf.len() - kept + held.max(64).min(HEADERS_MAX + 1 - held);
                    break kept;
                }
                Some(Err(())) => return Err("a multipart part's headers are too long to inspect".into()),
                Some(Ok(end)) => {
                    if self.base + p >= self.judged && names_method(&self.buf[p + self.delim.len()..end]) {
                        return Err("a `_method` field past the bytes this route inspects was not forwarded".to_owned());
                    }
                    from = end;
                }
            }
        };
        self.buf.drain(..keep_from);
        self.base += keep_from;
        Ok(())
    }

    /// The body has ended: what waits is read now, and a part whose headers never ended (some
    /// parsers read them anyway) must not name `_method` either.
    pub(crate) fn finish(&mut self) -> Result<(), String> {
        self.retry_at = 0;
        self.feed(&[])?;
        let start = self.base == 0;
        let mut from = 0;
        while let Some(p) = next_delim(&self.buf, from, &self.delim, start) {
            if self.base + p >= self.judged && names_method(&self.buf[p + self.delim.len()..]) {
                return Err("a multipart body ends inside the headers of a `_method` field".to_owned());
            }
            from = p + 1;
        }
        Ok(())
    }
}

/// A request body read by a [`Scan`] on its way upstream: it ends in an error, instead of the
/// piece, at an unjudged `_method` part.
pub(crate) struct Scanned<B> {
    pub inner: B,
    pub scan: Scan,
}

impl<B> hyper::body::Body for Scanned<B>
where
    B: hyper::body::Body<Data = Bytes, Error = super::http::BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = super::http::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        let judged = match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => frame.data_ref().map_or(Ok(()), |data| self.scan.feed(data)),
            std::task::Poll::Ready(None) => self.scan.finish(),
            _ => Ok(()),
        };
        if let Err(why) = judged {
            return std::task::Poll::Ready(Some(Err(why.into())));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &str = "xYz";

    fn part(name: &str, value: &str) -> String {
        format!("--{B}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
    }

    #[test]
    fn the_boundary_comes_from_a_multipart_form_type_only() {
        assert_eq!(boundary("multipart/form-data; boundary=\"ab c\""), Some(Some("ab c".into())));
        assert_eq!(boundary("Multipart/Form-Data;charset=x; BOUNDARY=q"), Some(Some("q".into())));
        assert_eq!(boundary("multipart/form-data"), Some(None));
        assert_eq!(boundary("multipart/mixed; boundary=z"), Some(Some("z".into())));
        assert_eq!(boundary("multipartx/form-data; boundary=z"), None);
        // What parsers read differently is refused.
        for odd in ["boundary=a,b", "boundary=a; boundary=b", "xboundary=b; boundary=a", "boundary=\"a b \""] {
            assert_eq!(boundary(&format!("multipart/form-data; {odd}")), Some(None), "{odd}");
        }
        assert_eq!(boundary("application/x-www-form-urlencoded"), None);
    }

    #[test]
    fn method_fields_are_read_from_whole_bodies_and_prefixes() {
        let body = format!("{}{}{}--{B}--\r\n", part("note", "x"), part("_method", " delete "), part("f", "y"));
        let got = method_fields(B, body.as_bytes(), true).unwrap();
        assert_eq!(got.methods, ["DELETE"]);
        // A percent-encoded name, no closing delimiter; names as Rack and PHP read them.
        for name in ["name*=UTF-8''%5Fmethod", "name=\"_\\method\"", "name=\".method\"", "name=_METHOD"] {
            let body = format!("--{B}\r\nContent-Disposition: form-data; {name}\r\n\r\nPUT\r\n--{B}--");
            assert_eq!(method_fields(B, body.as_bytes(), true).unwrap().methods, ["PUT"], "{name}");
        }
        // A longer name is another field.
        let other = format!("{}{}", part("payment_method", "card"), part("my_method.pdf", "x"));
        assert!(method_fields(B, other.as_bytes(), true).unwrap().methods.is_empty());
        // A header hidden after a bare-LF blank line, where Rack still reads headers; bare LF
        // line ends only: the headers never end for Rack, and the field is refused.
        let hidden = format!("--{B}\r\nX: 1\n\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nPUT\r\n--{B}--");
        assert_eq!(method_fields(B, hidden.as_bytes(), true).unwrap().methods, ["PUT"]);
        let lf = format!("--{B}\nContent-Disposition: form-data; name=\"_method\"\n\nPUT\n--{B}--");
        assert!(method_fields(B, lf.as_bytes(), true).is_err());
        assert!(method_fields(B, part("note", "_method=DELETE").as_bytes(), true).unwrap().methods.is_empty());
        // A prefix: a field cut inside its value cannot be judged; one cut in its headers is left
        // to the scan, from where its delimiter starts.
        let cut = format!("{}{}", part("note", "x"), part("_method", "DELETE"));
        let value_cut = &cut[..cut.len() - 4];
        assert!(method_fields(B, value_cut.as_bytes(), false).is_err());
        let head_cut = &cut[..cut.find("_method").unwrap() + 8];
        let got = method_fields(B, head_cut.as_bytes(), false).unwrap();
        assert_eq!(got, Prefix { methods: vec![], judged: part("note", "x").len() });
        assert!(method_fields(B, head_cut.as_bytes(), true).is_err(), "a whole body cut in its headers");
    }

    #[test]
    fn a_delimiter_cut_by_the_end_of_the_first_bytes_is_left_to_the_scan() {
        let body = format!("{}{}", part("note", "x"), part("_method", "DELETE"));
        let cut = part("note", "x").len() + 4;
        let prefix = method_fields(B, &body.as_bytes()[..cut], false).unwrap();
        assert!(prefix.methods.is_empty());
        let mut scan = Scan::new(B, prefix.judged);
        scan.feed(&body.as_bytes()[..cut]).unwrap();
        assert!(scan.feed(&body.as_bytes()[cut..]).is_err());
    }

    #[test]
    fn the_scan_stops_an_unjudged_method_field_however_the_body_is_cut() {
        let body =
            format!("{}{}{}--{B}--\r\n", part("file", &"z".repeat(300)), part("_method", "DELETE"), part("f", "y"));
        let at = part("file", &"z".repeat(300)).len();
        for size in [1, 2, 3, 7, 64, 1000] {
            // Judged up to the `_method` part: refused. Judged past it: let through.
            for (judged, refused) in [(at, true), (at + 1, false)] {
                let mut scan = Scan::new(B, judged);
                let result: Result<(), String> =
                    body.as_bytes().chunks(size).try_for_each(|c| scan.feed(c)).and_then(|()| scan.finish());
                assert_eq!(result.is_err(), refused, "pieces of {size}, judged to {judged}");
                assert!(scan.buf.len() <= HEADERS_MAX + 2 * size + 16, "the scan keeps little");
            }
        }
        let mut scan = Scan::new(B, 0);
        let long = format!("--{B}\r\n{}", "h".repeat(HEADERS_MAX + 10));
        assert!(scan.feed(long.as_bytes()).is_err(), "endless headers are refused");
        // Sent a byte at a time, too: found once the block passes the bound, and the block is
        // read again only as it doubles.
        let mut scan = Scan::new(B, 0);
        let mut reads = 0;
        let refused = long.as_bytes().chunks(1).any(|c| {
            let before = scan.retry_at;
            let r = scan.feed(c).is_err();
            reads += usize::from(scan.retry_at != before || r);
            r
        });
        assert!(refused && scan.buf.len() <= HEADERS_MAX + 16, "{}", scan.buf.len());
        assert!(reads < 40, "the block was read {reads} times");
    }

    /// Arbitrary bodies made of the pieces that matter, cut anywhere: nothing panics, the scan
    /// decides the same however the body is cut, and a body with an unjudged `_method` part that
    /// `method_fields` reads whole is refused by the scan too.
    #[test]
    fn the_scan_decides_the_same_however_an_arbitrary_body_is_cut() {
        let atoms: [&[u8]; 9] = [b"--xYz", b"\r\n", b"\n", b"_method", b"name=\"a\"", b"x", b"-", b"\r", b"DELETE"];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let mut body = Vec::new();
            for _ in 0..next() % 24 {
                body.extend_from_slice(atoms[(next() % atoms.len() as u64) as usize]);
            }
            let mut whole = Scan::new(B, 0);
            let expected = whole.feed(&body).and_then(|()| whole.finish()).is_err();
            let mut cut = Scan::new(B, 0);
            let mut at = 0;
            let mut refused = false;
            while at < body.len() && !refused {
                let n = 1 + (next() % 9) as usize;
                let end = (at + n).min(body.len());
                refused = cut.feed(&body[at..end]).is_err();
                at = end;
            }
            refused = refused || cut.finish().is_err();
            assert_eq!(refused, expected, "{:?}", String::from_utf8_lossy(&body));
            if let Ok(prefix) = method_fields(B, &body, true)
                && !prefix.methods.is_empty()
            {
                assert!(expected, "read a `_method` the scan let through: {:?}", String::from_utf8_lossy(&body));
            }
        }
    }
}
