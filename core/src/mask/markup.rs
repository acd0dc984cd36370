//! Markup (HTML, XML) is judged as its reader will see it: character references decoded, and
//! in HTML, inline tags that split a word gone.
//!
//! `jane&#64;example.org` renders as an e-mail address, `219&#45;09&#45;9999` and
//! `<em>219</em>-09-9999` (a search result's highlight) as an SSN, but the detectors read bytes;
//! a page that writes identifiers that way (references are a common way to hide e-mail
//! addresses from harvesters) would pass them unmasked. A [`Source`] keeps the bytes as they
//! arrived beside the text the detectors scan, with the offset each scanned byte came from.
//! What is not masked is sent as it arrived, byte for byte; a masked span replaces the
//! references it was read from and keeps its inline tags around the replacement, so the markup
//! stays balanced (`<em>[PHI:SSN]</em>`).
//!
//! Only references to characters with no meaning to markup are decoded, so decoding can never
//! open a tag or end an attribute: `&lt;`, `&#60;`, `&amp;`, white space and their kind stay as
//! written. Only inline tags of HTML are taken out (`<b>`, `</span>`, and `<span class="hl">`
//! or a comment when it holds no reference and the detectors find nothing in it, nor in any
//! attribute value read with its name as context: what is taken out is not scanned), and
//! where one stood between two letters or digits a space stands for it
//! (`<b>SSN</b>219-09-9999` still reads as two words). Any other tag stays in the scanned text,
//! where it separates words as `>` always did.

/// The longest reference waited for across a cut (`&#x` and a run of zeros is still one
/// character to a browser, but a run this long is taken as text).
const MAX_REF: usize = 40;

/// The longest bare inline tag (`</strike>`).
const MAX_TAG: usize = 10;

/// The longest inline tag with attributes, or comment, that is taken out; a longer one is text.
const MAX_QUIET: usize = 256;

/// The most tags taken out in a row; past them a tag is text, so that a run of tags with no
/// text between them cannot keep the stream from emitting.
const MAX_GONE: usize = 64;

/// Markup bytes as they arrived, and where each byte of the scanned text came from.
#[derive(Debug, Default)]
pub(super) struct Source {
    /// HTML: bare inline tags are taken out (in other XML they are elements like any other).
    html: bool,
    /// What judges an inline tag with attributes, or a comment: taken out only when it finds
    /// nothing in it. Without one, such tags stay text.
    judge: Option<std::sync::Arc<super::Detector>>,
    raw: Vec<u8>,
    /// `from[i]`: where in `raw` the character (or reference) of scanned byte `i` starts,
    /// counting the tags taken out just before it as its own.
    from: Vec<usize>,
    /// Where the last character scanned ends: tags after it belong to the next one.
    tail: usize,
    /// Tags taken out since the last character.
    gone: usize,
    /// `raw[..decoded]` has been read; the rest is a reference or tag still arriving.
    decoded: usize,
    /// The markup has ended: tags after the last character are the end's.
    ended: bool,
}

impl Source {
    /// A source for HTML (`html`) or other XML; in HTML, `judge` decides whether an inline tag
    /// with attributes or a comment may be taken out.
    pub(super) fn new(html: bool, judge: Option<std::sync::Arc<super::Detector>>) -> Self {
        Self { html, judge, ..Self::default() }
    }

    /// What is at `s` (which starts with `<`): a tag that is taken out, or not. An inline tag
    /// with attributes, or a comment, is taken out only when it holds no reference and the
    /// detectors find nothing in it, nor in any attribute value read with its name as context
    /// (`data-mrn="00123456"`).
    fn tag(&self, s: &[u8], at_end: bool) -> Ref {
        match inline_tag(s, at_end) {
            Ref::Quiet(len) => {
                let t = &s[..len];
                // References would have to be read decoded: such a tag stays text.
                let clean = !t.contains(&b'&')
                    && self.judge.as_ref().is_some_and(|d| {
                        d.finds_nothing(t) && attributes(t).all(|(name, value)| d.finds_nothing(&keyed(name, value)))
                    });
                if clean { Ref::Gone(len) } else { Ref::Text }
            }
            other => other,
        }
    }

    /// Appends `chunk` and reads what can be read into `text`; at the end, a reference or tag
    /// still incomplete is text.
    pub(super) fn feed(&mut self, chunk: &[u8], text: &mut Vec<u8>, at_end: bool) {
        self.raw.extend_from_slice(chunk);
        self.ended = at_end;
        let mut i = self.decoded;
        while i < self.raw.len() {
            let next = memchr::memchr2(b'&', b'<', &self.raw[i..]).map_or(self.raw.len(), |k| i + k);
            if next > i {
                self.unit(text, i, None, next);
            }
            i = next;
            if i == self.raw.len() {
                break;
            }
            let rest = &self.raw[i..];
            let read = match rest[0] {
                b'<' if self.html && self.gone < MAX_GONE => self.tag(rest, at_end),
                b'<' => Ref::Text,
                _ => reference(rest, at_end),
            };
            match read {
                Ref::Incomplete => break,
                Ref::Quiet(_) => unreachable!("judged by `tag`"),
                Ref::Gone(len) => {
                    self.gone += 1;
                    i += len;
                }
                Ref::Char(c, len) => {
                    self.unit(text, i, Some(c), i + len);
                    i += len;
                }
                Ref::Text => {
                    self.unit(text, i, None, i + 1);
                    i += 1;
                }
            }
        }
        self.decoded = i;
    }

    /// Scans `raw[at..to]`: as the character `c`, or (`None`) as it is. Where tags taken out
    /// just before it would join two letters or digits, a space read from the tags goes first.
    fn unit(&mut self, text: &mut Vec<u8>, at: usize, c: Option<char>, to: usize) {
        let mut utf8 = [0u8; 4];
        let bytes = match c {
            Some(c) => c.encode_utf8(&mut utf8).as_bytes(),
            None => &self.raw[at..to],
        };
        let word = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
        if self.gone > 0 && word(text.last()) && word(bytes.first()) {
            text.push(b' ');
            self.from.push(self.tail);
            self.tail = at;
        }
        self.gone = 0;
        text.extend_from_slice(bytes);
        self.from.push(self.tail);
        // The other bytes of a decoded character map to its start; of text, to themselves.
        match c {
            Some(_) => self.from.extend(std::iter::repeat_n(self.tail, bytes.len() - 1)),
            None => self.from.extend(at + 1..to),
        }
        self.tail = to;
    }

    /// The bytes that `text[a..b]` was read from. Past the last character, once the markup has
    /// ended and with `trailing`: the tags after it too.
    fn span(&self, a: usize, b: usize, trailing: bool) -> &[u8] {
        let start = self.from.get(a).copied().unwrap_or(self.tail);
        let end = match self.from.get(b) {
            Some(&r) => r,
            None if self.ended && trailing => self.decoded,
            None => self.tail,
        };
        &self.raw[start..end]
    }

    /// The bytes that `text[a..b]` was read from, and past the end of the markup, the tags
    /// after its last character.
    pub(super) fn raw(&self, a: usize, b: usize) -> &[u8] {
        self.span(a, b, true)
    }

    /// The scanned text lost its first `cut` bytes (fewer than it has); drops what only they
    /// came from.
    pub(super) fn trim(&mut self, cut: usize) {
        let rcut = self.from[cut];
        self.from.drain(..cut);
        for f in &mut self.from {
            *f -= rcut;
        }
        self.raw.drain(..rcut);
        self.tail -= rcut;
        self.decoded -= rcut;
    }
}

impl super::Written for Source {
    fn unmasked(&self, a: usize, b: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(self.raw(a, b));
    }

    /// Without the spaces that stand for removed tags (read from tags only: they end in `>`).
    fn shown<'t>(&self, text: &'t [u8], a: usize, b: usize) -> std::borrow::Cow<'t, [u8]> {
        let stands_in = |i: usize| text[i] == b' ' && self.span(i, i + 1, false).last() == Some(&b'>');
        if !self.html || !(a..b).any(stands_in) {
            return text[a..b].into();
        }
        (a..b).filter(|&i| !stands_in(i)).map(|i| text[i]).collect::<Vec<u8>>().into()
    }

    /// The inline tags that open a masked span (HTML: in other XML no tag was taken out).
    fn before_masked(&self, a: usize, b: usize, out: &mut Vec<u8>) {
        if !self.html {
            return;
        }
        let raw = self.span(a, b, false);
        out.extend_from_slice(&raw[..self.leading_tags(raw)]);
    }

    /// The other inline tags of a masked span, in order (the tags after the last character of
    /// the markup are not the span's: the end writes them).
    fn after_masked(&self, a: usize, b: usize, out: &mut Vec<u8>) {
        if !self.html {
            return;
        }
        let raw = self.span(a, b, false);
        let mut i = self.leading_tags(raw);
        while let Some(k) = memchr::memchr(b'<', &raw[i..]) {
            i += k;
            match self.tag(&raw[i..], true) {
                Ref::Gone(len) => {
                    out.extend_from_slice(&raw[i..i + len]);
                    i += len;
                }
                _ => i += 1,
            }
        }
    }
}

impl Source {
    /// The length of the inline tags at the start of `raw`.
    fn leading_tags(&self, raw: &[u8]) -> usize {
        let mut i = 0;
        while let Ref::Gone(len) = self.tag(&raw[i..], true) {
            i += len;
        }
        i
    }
}

/// What is at a `&` or a `<`.
#[derive(Debug, PartialEq)]
enum Ref {
    /// The reference may go on in bytes not yet arrived.
    Incomplete,
    /// A character and the length of its reference.
    Char(char, usize),
    /// A tag that is taken out, and its length.
    Gone(usize),
    /// An inline tag with attributes, or a comment, and its length: taken out if the detectors
    /// find nothing in it.
    Quiet(usize),
    /// Not a reference that is decoded: the `&` is text.
    Text,
}

/// The reference at the start of `s` (which starts with `&`).
fn reference(s: &[u8], at_end: bool) -> Ref {
    let more = |j: usize| if j >= s.len() && !at_end && j < MAX_REF { Ref::Incomplete } else { Ref::Text };
    let Some(&second) = s.get(1) else { return more(1) };
    if second == b'#' {
        // Numeric: decimal or `x` hex digits, then `;` — which browsers do not require.
        let mut j = 2;
        let hex = matches!(s.get(j), Some(b'x' | b'X'));
        if hex {
            j += 1;
        }
        let start = j;
        let mut value: u32 = 0;
        while let Some(&b) = s.get(j) {
            let d = match (b, hex) {
                (b'0'..=b'9', _) => u32::from(b - b'0'),
                (b'a'..=b'f', true) => u32::from(b - b'a' + 10),
                (b'A'..=b'F', true) => u32::from(b - b'A' + 10),
                _ => break,
            };
            value = value.saturating_mul(if hex { 16 } else { 10 }).saturating_add(d);
            j += 1;
            if j >= MAX_REF {
                return Ref::Text;
            }
        }
        if j >= s.len() {
            return more(j);
        }
        if j == start {
            return Ref::Text;
        }
        if s[j] == b';' {
            j += 1;
        }
        return match char::from_u32(value).filter(|&c| harmless(c)) {
            Some(c) => Ref::Char(c, j),
            None => Ref::Text,
        };
    }
    // Named: letters and digits, then `;` (required: no name decoded here has a legacy form).
    let mut j = 1;
    while s.get(j).is_some_and(u8::is_ascii_alphanumeric) {
        j += 1;
        if j >= MAX_REF {
            return Ref::Text;
        }
    }
    if j >= s.len() {
        return more(j);
    }
    if s[j] != b';' {
        return Ref::Text;
    }
    match named(&s[1..j]).filter(|&c| harmless(c)) {
        Some(c) => Ref::Char(c, j + 1),
        None => Ref::Text,
    }
}

/// The inline tag or comment at the start of `s` (which starts with `<`), if it is one: a bare
/// tag is [`Ref::Gone`], one with attributes or a comment [`Ref::Quiet`].
fn inline_tag(s: &[u8], at_end: bool) -> Ref {
    if s.first() != Some(&b'<') {
        return Ref::Text;
    }
    let more = |len: usize, limit: usize| if at_end || len >= limit { Ref::Text } else { Ref::Incomplete };
    if s.get(1) == Some(&b'!') {
        return comment(s, at_end);
    }
    let closing = s.get(1) == Some(&b'/');
    let mut j = 1 + usize::from(closing);
    let start = j;
    while s.get(j).is_some_and(u8::is_ascii_alphanumeric) && j < MAX_TAG {
        j += 1;
    }
    if j >= s.len() {
        return more(j, MAX_TAG);
    }
    let inline = j > start && INLINE.contains(&s[start..j].to_ascii_lowercase().as_slice());
    match s[j] {
        b'>' if inline => Ref::Gone(j + 1),
        // Attributes, up to the `>` outside quotes.
        b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' if inline && !closing => {
            // A quote opens a quoted value only where a value starts (after `=` and any white
            // space), as a browser reads it: elsewhere it is part of a name or unquoted value.
            let mut quote = None;
            let mut value_starts = false;
            for (k, &b) in s.iter().enumerate().take(MAX_QUIET).skip(j) {
                match (quote, b) {
                    (None, b'"' | b'\'') if value_starts => quote = Some(b),
                    (Some(q), b) if b == q => quote = None,
                    (None, b'>') => return Ref::Quiet(k + 1),
                    (None, b'<') => return Ref::Text,
                    _ => {}
                }
                if quote.is_none() {
                    value_starts = b == b'=' || (value_starts && b.is_ascii_whitespace());
                }
            }
            more(s.len(), MAX_QUIET)
        }
        _ => Ref::Text,
    }
}

/// `name: value`, as the detectors read a named value (`data-mrn="00123456"` is an MRN).
fn keyed(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut hay: Vec<u8> = name.iter().map(|&b| if b == b'-' || b == b'_' { b' ' } else { b }).collect();
    hay.extend_from_slice(b": ");
    hay.extend_from_slice(value);
    hay
}

/// The attributes of a whole tag (`<name a="1" b=2 c>`): name and value (empty for none).
fn attributes(tag: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let inner = tag.strip_prefix(b"<").unwrap_or(tag);
    let inner = inner.strip_suffix(b">").unwrap_or(inner);
    // Past the element's name.
    let mut i = inner.iter().position(|b| b.is_ascii_whitespace() || *b == b'/').unwrap_or(inner.len());
    // The index of the first byte at or after `i` that `stop` accepts (or the end).
    let until = move |i: usize, stop: &dyn Fn(u8) -> bool| {
        inner[i..].iter().position(|&b| stop(b)).map_or(inner.len(), |k| i + k)
    };
    std::iter::from_fn(move || {
        i = until(i, &|b| !b.is_ascii_whitespace() && b != b'/');
        if i >= inner.len() {
            return None;
        }
        let start = i;
        i = until(i, &|b| b.is_ascii_whitespace() || matches!(b, b'=' | b'/'));
        let name = &inner[start..i];
        i = until(i, &|b| !b.is_ascii_whitespace());
        if inner.get(i) != Some(&b'=') {
            return Some((name, &inner[i..i]));
        }
        i = until(i + 1, &|b| !b.is_ascii_whitespace());
        let value = match inner.get(i) {
            Some(&q @ (b'"' | b'\'')) => {
                let end = until(i + 1, &|b| b == q);
                let v = &inner[i + 1..end];
                i = (end + 1).min(inner.len());
                v
            }
            _ => {
                let start = i;
                i = until(i, &|b| b.is_ascii_whitespace());
                &inner[start..i]
            }
        };
        Some((name, value))
    })
}

/// The comment at the start of `s` (which starts with `<!`), if it is one.
fn comment(s: &[u8], at_end: bool) -> Ref {
    const OPEN: &[u8] = b"<!--";
    let head = &s[..s.len().min(OPEN.len())];
    if head != &OPEN[..head.len()] {
        return Ref::Text;
    }
    if s.len() < OPEN.len() {
        return if at_end { Ref::Text } else { Ref::Incomplete };
    }
    // `<!-->` and `<!--->` end where they start.
    for short in [&b"<!-->"[..], b"<!--->"] {
        if s.starts_with(short) {
            return Ref::Quiet(short.len());
        }
    }
    let body = &s[OPEN.len()..s.len().min(MAX_QUIET)];
    // `-->` ends it, and so does `--!>` (a browser's "comment end bang").
    let end = [&b"-->"[..], b"--!>"]
        .iter()
        .filter_map(|close| memchr::memmem::find(body, close).map(|k| k + close.len()))
        .min();
    match end {
        Some(k) => Ref::Quiet(OPEN.len() + k),
        None if at_end || s.len() >= MAX_QUIET => Ref::Text,
        None => Ref::Incomplete,
    }
}

/// HTML elements whose tags do not separate the words around them (phrasing content).
const INLINE: &[&[u8]] = &[
    b"a", b"abbr", b"b", b"bdi", b"bdo", b"cite", b"code", b"data", b"del", b"dfn", b"em", b"font", b"i", b"ins",
    b"kbd", b"mark", b"nobr", b"q", b"s", b"samp", b"small", b"span", b"strike", b"strong", b"sub", b"sup", b"time",
    b"tt", b"u", b"var", b"wbr",
];

/// A character whose reference can be replaced by the character itself without changing what
/// the markup means: not markup syntax, not white space (which ends an unquoted attribute, and a
/// `partial` mask writes the value's separators), not a control character, not a noncharacter.
fn harmless(c: char) -> bool {
    match c {
        '<' | '>' | '&' | '"' | '\'' => false,
        c if c.is_whitespace() || c.is_control() => false,
        c => !('\u{fdd0}'..='\u{fdef}').contains(&c) && (u32::from(c) & 0xfffe) != 0xfffe,
    }
}

/// The named references that can spell identifiers: ASCII punctuation and dashes. Letters and
/// digits have no names; references to other characters are decoded by number only. (Browsers
/// also read a few legacy names without their `;`, such as `&nbsp`; none of them is here.)
fn named(name: &[u8]) -> Option<char> {
    Some(match name {
        b"commat" => '@',
        b"period" => '.',
        b"comma" => ',',
        b"colon" => ':',
        b"semi" => ';',
        b"sol" => '/',
        b"bsol" => '\\',
        b"lpar" => '(',
        b"rpar" => ')',
        b"lsqb" | b"lbrack" => '[',
        b"rsqb" | b"rbrack" => ']',
        b"lcub" | b"lbrace" => '{',
        b"rcub" | b"rbrace" => '}',
        b"plus" => '+',
        b"num" => '#',
        b"dollar" => '$',
        b"percnt" => '%',
        b"excl" => '!',
        b"quest" => '?',
        b"equals" => '=',
        b"lowbar" | b"UnderBar" => '_',
        b"ast" | b"midast" => '*',
        b"verbar" | b"vert" | b"VerticalLine" => '|',
        b"Hat" => '^',
        b"grave" | b"DiacriticalGrave" => '`',
        b"hyphen" | b"dash" => '\u{2010}',
        b"ndash" => '\u{2013}',
        b"minus" => '\u{2212}',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(s: &str) -> (String, Source) {
        let mut src = Source::new(true, None);
        let mut text = Vec::new();
        src.feed(s.as_bytes(), &mut text, true);
        (String::from_utf8(text).unwrap(), src)
    }

    #[test]
    fn harmless_references_are_decoded_and_markup_stays_as_written() {
        assert_eq!(decode("jane&#64;example&period;org").0, "jane@example.org");
        assert_eq!(decode("219&#x2D;09&#45;9999 &commat;").0, "219-09-9999 @");
        // Browsers end a numeric reference at the first non-digit even without `;`.
        assert_eq!(decode("a&#64b &#x40z").0, "a@b @z");
        // Markup syntax, controls and nonsense are not decoded.
        for s in [
            "&#60;b&#62;",
            "&lt;",
            "&amp;",
            "&#34;&#39;",
            "&#0;",
            "&#x1;",
            "&#150;",
            "&#xFFFE;",
            "&#99999999;",
            "&#32;&#9;&nbsp;",
        ] {
            assert_eq!(decode(s).0, s);
        }
        assert_eq!(decode("AT&T & co &unknown; &#;").0, "AT&T & co &unknown; &#;");
    }

    #[test]
    fn every_decoded_byte_maps_back_to_what_it_was_read_from() {
        let (text, src) = decode("x&#169;y&commat;");
        assert_eq!(text, "x\u{a9}y@");
        assert_eq!(src.raw(0, 1), b"x");
        assert_eq!(src.raw(1, 3), b"&#169;");
        assert_eq!(src.raw(3, 5), b"y&commat;");
        assert_eq!(src.raw(0, text.len()), "x&#169;y&commat;".as_bytes());
    }

    #[test]
    fn a_reference_cut_in_two_waits_for_its_end() {
        let whole = "mail jane&#64;example.org or &#x3;x &lt;&commat;";
        for cut in 0..=whole.len() {
            let mut src = Source::new(true, None);
            let mut text = Vec::new();
            src.feed(&whole.as_bytes()[..cut], &mut text, false);
            src.feed(&whole.as_bytes()[cut..], &mut text, true);
            assert_eq!(String::from_utf8(text).unwrap(), decode(whole).0, "cut at {cut}");
            assert_eq!(src.raw(0, usize::MAX), whole.as_bytes());
        }
    }

    #[test]
    fn bare_inline_tags_are_taken_out_and_belong_to_what_follows() {
        let page = "SSN <em>219</em>-09-<B>9999</B> <b class=x>a</b> <br>x<div>y</div> <spanx>z</ span>";
        let (text, src) = decode(page);
        assert_eq!(text, "SSN 219-09-9999 <b class=x>a <br>x<div>y</div> <spanx>z</ span>");
        assert_eq!(src.raw(0, 4), b"SSN ");
        assert_eq!(src.raw(4, 15), b"<em>219</em>-09-<B>9999".as_slice(), "`</B>` goes with the space after it");
        assert_eq!(src.raw(0, text.len()), page.as_bytes());
        // Cut anywhere, with the text before the cut taken (as a stream emits it) before the
        // rest arrives: every byte is still accounted for once.
        for cut in 0..=page.len() {
            let mut src = Source::new(true, None);
            let mut text = Vec::new();
            src.feed(&page.as_bytes()[..cut], &mut text, false);
            let first = text.len();
            let mut out = src.raw(0, first).to_vec();
            src.feed(&page.as_bytes()[cut..], &mut text, true);
            out.extend_from_slice(src.raw(first, text.len()));
            assert_eq!(out, page.as_bytes(), "cut at {cut}");
        }
    }

    fn judged(s: &str) -> String {
        let det = std::sync::Arc::new(super::super::Detector::new(&[], &[]).unwrap());
        let mut src = Source::new(true, Some(det));
        let mut text = Vec::new();
        src.feed(s.as_bytes(), &mut text, true);
        String::from_utf8(text).unwrap()
    }

    #[test]
    fn inline_tags_with_attributes_and_comments_go_when_nothing_is_in_them() {
        assert_eq!(judged("219<span class=\"hl x\">-09</span>-9999"), "219-09-9999");
        assert_eq!(
            judged("219<span class=\"col-2 h1\" data-n=3>-09</span>-9999"),
            "219-09-9999",
            "digits alone are no identifier"
        );
        let attrs: Vec<(String, String)> = attributes(b"<a href=\"/x?a=1\" title='T' hidden data-x = y>")
            .map(|(n, v)| (String::from_utf8_lossy(n).into_owned(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        assert_eq!(
            attrs,
            [("href", "/x?a=1"), ("title", "T"), ("hidden", ""), ("data-x", "y")]
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
        assert_eq!(judged("219<!-- x -->-09<!---->-<!-->9999"), "219-09-9999");
        assert_eq!(judged("<mark data-q='a>b'>219</mark>"), "219", "a `>` in quotes is not the end");
        // A quote that does not start a value opens nothing; `--!>` ends a comment.
        assert_eq!(judged("<b x=a'b>SSN</b> 219-09-9999 'c'"), "SSN 219-09-9999 'c'");
        assert_eq!(judged("a<!-- x --!>b -->c"), "a b -->c");
        // What could hold an identifier stays, and is scanned.
        for kept in [
            "<span title=\"SSN 219-09-9999\">x</span>",
            "<span title=\"jane&#64;example.org\">x</span>",
            "<a href=\"mailto:jane@example.org\">x</a>",
            "<span title=\"Dr. Emily Chen\">x</span>",
            "<span data-mrn=\"00123456\">x</span>",
            "<a href=\"/patients/219-09-9999\">x</a>",
            "<!-- SSN 219-09-9999 -->",
            "<div class=x>y</div>",
            "<span class=x",
        ] {
            assert!(judged(kept).starts_with(&kept[..6]), "{kept}: {}", judged(kept));
        }
        // Without a judge nothing with attributes goes.
        assert_eq!(decode("219<span class=hl>-09").0, "219<span class=hl>-09");
        // A tag or comment cut anywhere reads the same.
        let page = "a 219<span class=\"hl\">-09</span>-9999 <!-- note --> b";
        let det = std::sync::Arc::new(super::super::Detector::new(&[], &[]).unwrap());
        for cut in 0..=page.len() {
            let mut src = Source::new(true, Some(det.clone()));
            let mut text = Vec::new();
            src.feed(&page.as_bytes()[..cut], &mut text, false);
            src.feed(&page.as_bytes()[cut..], &mut text, true);
            assert_eq!(String::from_utf8(text).unwrap(), judged(page), "cut at {cut}");
            assert_eq!(src.raw(0, usize::MAX), page.as_bytes());
        }
    }

    #[test]
    fn an_endless_reference_is_text() {
        let long = format!("&#{}", "0".repeat(100));
        let mut src = Source::new(true, None);
        let mut text = Vec::new();
        src.feed(long.as_bytes(), &mut text, false);
        assert_eq!(text, long.as_bytes(), "not held back beyond {MAX_REF} bytes");
    }
}
