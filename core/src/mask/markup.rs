//! Markup (HTML, XML) is judged as its reader will see it: character references decoded.
//!
//! `jane&#64;example.org` renders as an e-mail address and `219&#45;09&#45;9999` as an SSN, but
//! the detectors read bytes; a page that writes identifiers with references (a common way to
//! hide e-mail addresses from harvesters) would pass them unmasked. A [`Source`] keeps the
//! bytes as they arrived beside the decoded text the detectors scan, with the offset each
//! decoded byte came from. What is not masked is sent as it arrived, byte for byte; a masked
//! span replaces the references it was read from. Only references to characters with no
//! meaning to markup are decoded, so decoding can never open a tag or end an attribute:
//! `&lt;`, `&#60;`, `&amp;` and their kind stay as written (and undecoded).

/// The longest reference waited for across a cut (`&#x` and a run of zeros is still one
/// character to a browser, but a run this long is taken as text).
const MAX_REF: usize = 40;

/// Markup bytes as they arrived, and where each byte of the decoded text came from.
#[derive(Debug, Default)]
pub(super) struct Source {
    raw: Vec<u8>,
    /// `from[i]`: the offset in `raw` of the character (or reference) decoded byte `i` is part of.
    from: Vec<usize>,
    /// `raw[..decoded]` has been decoded; the rest is a reference still arriving.
    decoded: usize,
}

impl Source {
    /// Appends `chunk` and decodes what can be decoded into `text`; at the end, a reference
    /// still incomplete is text.
    pub(super) fn feed(&mut self, chunk: &[u8], text: &mut Vec<u8>, at_end: bool) {
        self.raw.extend_from_slice(chunk);
        let raw = &self.raw;
        let mut i = self.decoded;
        while i < raw.len() {
            let next = memchr::memchr(b'&', &raw[i..]).map_or(raw.len(), |k| i + k);
            text.extend_from_slice(&raw[i..next]);
            self.from.extend(i..next);
            i = next;
            if i == raw.len() {
                break;
            }
            match reference(&raw[i..], at_end) {
                Ref::Incomplete => break,
                Ref::Char(c, len) => {
                    let mut utf8 = [0u8; 4];
                    let s = c.encode_utf8(&mut utf8);
                    text.extend_from_slice(s.as_bytes());
                    self.from.extend(std::iter::repeat_n(i, s.len()));
                    i += len;
                }
                Ref::Text => {
                    text.push(b'&');
                    self.from.push(i);
                    i += 1;
                }
            }
        }
        self.decoded = i;
    }

    /// The bytes that decoded to `text[a..b]`.
    pub(super) fn raw(&self, a: usize, b: usize) -> &[u8] {
        let at = |i: usize| self.from.get(i).copied().unwrap_or(self.decoded);
        &self.raw[at(a)..at(b)]
    }

    /// The decoded text lost its first `cut` bytes; drops what only they came from.
    pub(super) fn trim(&mut self, cut: usize) {
        let rcut = self.from.get(cut).copied().unwrap_or(self.decoded);
        self.from.drain(..cut);
        for f in &mut self.from {
            *f -= rcut;
        }
        self.raw.drain(..rcut);
        self.decoded -= rcut;
    }
}

#[derive(Debug, PartialEq)]
enum Ref {
    /// The reference may go on in bytes not yet arrived.
    Incomplete,
    /// A character and the length of its reference.
    Char(char, usize),
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
    // Named: letters and digits, then `;` (required here: the names decoded have no legacy
    // form without it).
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

/// A character whose reference can be replaced by the character itself without changing what
/// the markup means: not markup syntax, not a control character, not a noncharacter.
fn harmless(c: char) -> bool {
    match c {
        '<' | '>' | '&' | '"' | '\'' => false,
        '\t' | '\n' => true,
        c if c < ' ' || ('\u{7f}'..'\u{a0}').contains(&c) => false,
        c => !('\u{fdd0}'..='\u{fdef}').contains(&c) && (u32::from(c) & 0xfffe) != 0xfffe,
    }
}

/// The named references that can spell identifiers: ASCII punctuation and spaces. Letters and
/// digits have no names; references to other characters are decoded by number only.
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
        b"nbsp" | b"NonBreakingSpace" => '\u{a0}',
        b"Tab" => '\t',
        b"NewLine" => '\n',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(s: &str) -> (String, Source) {
        let mut src = Source::default();
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
        for s in ["&#60;b&#62;", "&lt;", "&amp;", "&#34;&#39;", "&#0;", "&#x1;", "&#150;", "&#xFFFE;", "&#99999999;"] {
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
            let mut src = Source::default();
            let mut text = Vec::new();
            src.feed(&whole.as_bytes()[..cut], &mut text, false);
            src.feed(&whole.as_bytes()[cut..], &mut text, true);
            assert_eq!(String::from_utf8(text).unwrap(), decode(whole).0, "cut at {cut}");
            assert_eq!(src.raw(0, usize::MAX), whole.as_bytes());
        }
    }

    #[test]
    fn an_endless_reference_is_text() {
        let long = format!("&#{}", "0".repeat(100));
        let mut src = Source::default();
        let mut text = Vec::new();
        src.feed(long.as_bytes(), &mut text, false);
        assert_eq!(text, long.as_bytes(), "not held back beyond {MAX_REF} bytes");
    }
}
