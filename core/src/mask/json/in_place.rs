//! A JSON document masked in its own text.
//!
//! The tree walk (parse into a `Value`, mask, serialize) builds and frees a node per value and
//! writes the whole document again, with its keys sorted. Here the text is read once, token by
//! token: a string or number that masking changes is replaced, everything else — key order,
//! spacing, how numbers are spelled — is copied as it came. Each value gets exactly what the tree
//! walk gives it (the same key context, field rules and counts); a test compares the two on
//! generated documents. The reader checks the grammar as it goes, so the text is read once:
//! what it masks must parse, and what does not parse is the tree walk's to refuse (tests and the
//! `mask_stream` fuzz target hold it to that).
//!
//! What this path does not do, it leaves to the tree walk (it answers `None` before counting
//! anything): a field rule that drops a field or applies to an object or array, a side-channel
//! field (`logprobs`, Ollama's `context`), a string that may be an encoded payload (`blob`,
//! `data`, `b64_json`), an object key that itself holds PHI, a number whose
//! spelling masks differently from the tree walk's spelling of it, and text that is not valid
//! JSON. One difference is deliberate: a key that appears twice in an object keeps both values
//! here, each masked and counted, where the tree walk keeps only the last.

use serde_json::Value;

use super::{CleanKeys, field_value, number_under, side_channel_key};
use crate::mask::{PathSeg, Profile, Tally, Values};

/// One open container.
enum Frame {
    /// An object, and the place in it of the member being read.
    Object { member: usize },
    /// An array, and the index of the next element.
    Array(usize),
}

/// The deepest nesting read here: the tree walk's parser refuses a document nested deeper, and
/// both paths must take the same documents.
const MAX_DEPTH: usize = 127;

/// What the grammar allows next.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    /// A value (the document, an array element after a comma, a member's value).
    Value,
    /// A value or `]`: an array has just opened.
    ValueOrEnd,
    /// A key: a comma in an object.
    Key,
    /// A key or `}`: an object has just opened.
    KeyOrEnd,
    /// The colon after a key.
    Colon,
    /// A comma or the end of the innermost container; at the top level, the end of the text.
    Next,
}

/// Masks `body` (a whole JSON document) in place; `None` when the tree walk must do it.
pub(super) fn mask(profile: &Profile, body: &[u8], tally: &Tally) -> Option<Vec<u8>> {
    // UTF-8 checked once for the whole text, so a string is a slice of it (its quotes are ASCII,
    // so they are character boundaries). Not UTF-8, the tree walk refuses it.
    let text = std::str::from_utf8(body).ok()?;
    let mut doc = Doc {
        profile,
        body,
        text,
        out: Vec::new(),
        copied: 0,
        values: Values::new(profile),
        rules: Tally::default(),
        spare: Vec::new(),
        known: Vec::new(),
        track: !profile.fields.is_empty(),
    };
    let mut keys = CleanKeys::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut path: Vec<PathSeg> = Vec::new();
    // The reader checks the grammar as it goes (the tree walk refuses what it does not
    // accept). It keeps its own stack and does not recurse.
    let mut want = Want::Value;
    let mut at = 0;
    loop {
        at = skip_space(body, at);
        let Some(&b) = body.get(at) else { break };
        match (b, want) {
            (b'{', Want::Value | Want::ValueOrEnd) => {
                doc.enter(&mut stack, &mut path)?;
                if stack.len() == MAX_DEPTH {
                    return None;
                }
                stack.push(Frame::Object { member: 0 });
                want = Want::KeyOrEnd;
                at += 1;
            }
            (b'[', Want::Value | Want::ValueOrEnd) => {
                doc.enter(&mut stack, &mut path)?;
                if stack.len() == MAX_DEPTH {
                    return None;
                }
                stack.push(Frame::Array(0));
                want = Want::ValueOrEnd;
                at += 1;
            }
            (b'}', Want::KeyOrEnd | Want::Next) | (b']', Want::ValueOrEnd | Want::Next) => {
                match (stack.pop(), b) {
                    (Some(Frame::Object { .. }), b'}') | (Some(Frame::Array(_)), b']') => {}
                    _ => return None,
                }
                // The container was the value of its parent's current place.
                doc.advance(&mut stack, &mut path);
                want = Want::Next;
                at += 1;
            }
            (b',', Want::Next) => {
                want = match stack.last() {
                    Some(Frame::Object { .. }) => Want::Key,
                    Some(Frame::Array(_)) => Want::Value,
                    None => return None,
                };
                at += 1;
            }
            (b':', Want::Colon) => {
                want = Want::Value;
                at += 1;
            }
            (b'"', Want::Key | Want::KeyOrEnd) => {
                let depth = stack.len();
                let Some(&Frame::Object { member }) = stack.last() else { return None };
                // The records of an array repeat their keys in the same order: a key the same
                // as the one at its place in the object before at this depth is known clean.
                // The same bytes are the same token (a string ends at its first unescaped
                // quote), so it is not read again.
                let known = doc.known.get(depth).and_then(|k| k.get(member));
                let same_token = |k: &&Known| {
                    let token = &body[k.token.0..k.token.1];
                    body.get(at..at + token.len()).is_some_and(|t| same(t, token))
                };
                let end = match known.filter(same_token) {
                    Some(k) => at + (k.token.1 - k.token.0),
                    None => {
                        let (end, escaped) = string_end(body, at)?;
                        let k = decode(text, at, end, escaped)?;
                        if side_channel_key(&k) || !keys.is_clean(profile, &k) {
                            return None;
                        }
                        doc.learn(depth, member, (at, end), k.into_owned());
                        end
                    }
                };
                // The key goes on the path in a string a finished key left behind.
                if doc.track {
                    let mut key = doc.spare.pop().unwrap_or_default();
                    key.clear();
                    key.push_str(&doc.known[depth][member].key);
                    path.push(PathSeg::Key(key));
                }
                want = Want::Colon;
                at = end;
            }
            (b'"', Want::Value | Want::ValueOrEnd) => {
                let (end, escaped) = string_end(body, at)?;
                doc.value(&mut stack, &mut path, at, end, Kind::String { escaped })?;
                want = Want::Next;
                at = end;
            }
            (_, Want::Value | Want::ValueOrEnd) => {
                // A number, `true`, `false` or `null` (a number's grammar is checked where it
                // is read).
                let end = at + body[at..].iter().position(|&c| !is_scalar_byte(c)).unwrap_or(body.len() - at);
                let kind = match &body[at..end] {
                    b"true" | b"false" | b"null" => Kind::Literal,
                    [b'-' | b'0'..=b'9', ..] => Kind::Number,
                    _ => return None,
                };
                doc.value(&mut stack, &mut path, at, end, kind)?;
                want = Want::Next;
                at = end;
            }
            _ => return None,
        }
    }
    // The whole document, and nothing after it.
    if want != Want::Next || !stack.is_empty() {
        return None;
    }
    doc.values.count_into(tally);
    for (label, n) in doc.rules.snapshot() {
        tally.add(&label, n);
    }
    if doc.copied == 0 {
        return Some(body.to_vec());
    }
    doc.out.extend_from_slice(&body[doc.copied..]);
    Some(doc.out)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A string, and whether it has escapes.
    String {
        escaped: bool,
    },
    Number,
    Literal,
}

/// What replaces a value.
enum New {
    /// This JSON text.
    Json(Vec<u8>),
    /// The text [`Values`] masked last, as a JSON string; `plain` when it needs no escape
    /// (what it was masked from needed none, and no label does).
    Masked { plain: bool },
}

struct Doc<'a> {
    profile: &'a Profile,
    body: &'a [u8],
    /// `body`, known to be UTF-8.
    text: &'a str,
    /// The masked text up to `copied`; empty while nothing has changed.
    out: Vec<u8>,
    copied: usize,
    /// Masks the values, and counts what it masked until the whole document is done here:
    /// only then are the counts handed to the caller's tally.
    values: Values<'a>,
    /// The same for field rules.
    rules: Tally,
    /// The strings of keys taken off the path, for the next keys: a document of records
    /// repeats its few keys thousands of times.
    spare: Vec<String>,
    /// For each depth, the keys of the last object read at that depth, by their place in it.
    known: Vec<Vec<Known>>,
    /// Whether the path is kept as the reader goes: only field rules ask for it (the keys of
    /// the values are in `known`), and without them it is built where it is needed.
    track: bool,
}

/// A key at its place in an object: known clean, and what the search found in its prefix.
#[derive(Default)]
struct Known {
    /// Where the key's string token (with its quotes) is in the text.
    token: (usize, usize),
    /// The key.
    key: String,
    memo: crate::mask::detect::KeyMemo,
}

impl Doc<'_> {
    /// A container starts where a value is expected: a field rule on its place sends the
    /// document to the tree walk.
    fn enter(&mut self, stack: &mut [Frame], path: &mut Vec<PathSeg>) -> Option<()> {
        if self.place(stack, path) && self.profile.json_rule(path).is_some() {
            return None;
        }
        Some(())
    }

    /// Remembers the clean `key`, written at `token`, as the `member`th key of an object at
    /// `depth`.
    fn learn(&mut self, depth: usize, member: usize, token: (usize, usize), key: String) {
        if self.known.len() <= depth {
            self.known.resize_with(depth + 1, Vec::new);
        }
        let keys = &mut self.known[depth];
        if keys.len() <= member {
            keys.resize_with(member + 1, Known::default);
        }
        keys[member] = Known { token, key, memo: Default::default() };
    }

    /// Puts the place of the value about to be read on the path, if it is kept (an object's
    /// key is there already); false at the top level.
    fn place(&self, stack: &[Frame], path: &mut Vec<PathSeg>) -> bool {
        match stack.last() {
            Some(Frame::Object { .. }) => true,
            Some(Frame::Array(i)) => {
                if self.track {
                    path.push(PathSeg::Index(Some(*i)));
                }
                true
            }
            None => false,
        }
    }

    /// Moves the innermost container past its current value, taking its place off the path.
    fn advance(&mut self, stack: &mut [Frame], path: &mut Vec<PathSeg>) {
        match stack.last_mut() {
            Some(Frame::Object { member }) => *member += 1,
            Some(Frame::Array(i)) => *i += 1,
            None => return,
        }
        if let Some(PathSeg::Key(key)) = path.pop() {
            self.spare.push(key);
        }
    }

    /// A scalar value at `start..end`: masked as the tree walk would mask it.
    fn value(
        &mut self,
        stack: &mut [Frame],
        path: &mut Vec<PathSeg>,
        start: usize,
        end: usize,
        kind: Kind,
    ) -> Option<()> {
        // The key of the value's place (a string's own key; for a number, the nearest key
        // above it), by its depth and place in its object, and whether it is the value's own.
        let keyed = match kind {
            Kind::Number => stack.iter().enumerate().rev().find_map(|(i, f)| match *f {
                Frame::Object { member } => Some((i + 1, member, i + 1 == stack.len())),
                Frame::Array(_) => None,
            }),
            _ => match stack.last() {
                Some(&Frame::Object { member }) => Some((stack.len(), member, true)),
                _ => None,
            },
        };
        let inside = self.place(stack, path);
        let raw = &self.body[start..end];
        // The key, and what is known of it when it is the value's own. Every open object's
        // current key was read before its value; were it not known, the tree walk decides.
        let (key, memo) = match keyed {
            Some((depth, member, own)) => {
                let Known { key, memo, .. } = self.known.get_mut(depth)?.get_mut(member)?;
                (Some(key.as_str()), own.then_some(memo))
            }
            None => (None, None),
        };
        // An encoded payload (`blob`, `b64_json`, MCP `data`) is the tree walk's, which decodes
        // and masks it before any field rule on its key (a rule that keeps `data` must not send
        // what it encodes unread).
        if matches!(kind, Kind::String { .. }) && key.is_some_and(super::payload_key) {
            return None;
        }
        let replacement = match self.profile.json_rule(path) {
            Some(rule) if inside => {
                let v: Value = serde_json::from_slice(raw).ok()?;
                match field_value(self.profile, rule, &v, &self.rules) {
                    Some(new) if new == v => None,
                    Some(new) => Some(New::Json(serde_json::to_vec(&new).ok()?)),
                    None => return None,
                }
            }
            _ => match kind {
                Kind::Literal => None,
                Kind::String { escaped } => {
                    let s = decode(self.text, start, end, escaped)?;
                    // The key, if the string has one, is context (`"mrn": "028939"`).
                    // Without an escape, it holds no line break (JSON has no other way to
                    // write one), so no text table.
                    let plain = !escaped && self.profile.plain_labels;
                    self.values.mask_lines(key, s.as_bytes(), escaped, memo).then_some(New::Masked { plain })
                }
                Kind::Number => {
                    // The number as the tree walk spells it (`1e2` is `100.0` there); a plain
                    // integer (most numbers: ids, counts) is spelled there as it is here.
                    let text = match plain_integer(raw) {
                        true => std::borrow::Cow::Borrowed(&self.text[start..end]),
                        false => serde_json::from_slice::<serde_json::Number>(raw).ok()?.to_string().into(),
                    };
                    // The nearest key above it is context (`"phones": [6175550123]`).
                    if self.values.mask_lines(key, text.as_bytes(), false, memo) {
                        Some(New::Masked { plain: self.profile.plain_labels })
                    } else if raw != text.as_bytes() && number_under(self.profile, key, raw, &Tally::default()) != raw {
                        // Left alone, the number goes out as the upstream spelled it: that
                        // spelling must pass too (`98765432109876543210` reads as
                        // `9.876543210987654e19`).
                        return None;
                    } else {
                        None
                    }
                }
            },
        };
        if let Some(new) = replacement {
            if self.out.is_empty() {
                self.out.reserve(self.body.len());
            }
            self.out.extend_from_slice(&self.body[self.copied..start]);
            match new {
                New::Json(json) => self.out.extend_from_slice(&json),
                // Masking keeps text UTF-8 (it widens findings to character boundaries); it
                // is checked all the same (most masked values are ASCII, which is quicker to
                // tell), so a slip sends the document to the tree walk, not out.
                New::Masked { plain } => {
                    let masked = &self.values.out;
                    if !masked.is_ascii() {
                        std::str::from_utf8(masked).ok()?;
                    }
                    if plain || first_special(masked).is_none() {
                        self.out.push(b'"');
                        self.out.extend_from_slice(masked);
                        self.out.push(b'"');
                    } else {
                        serde_json::to_writer(&mut self.out, std::str::from_utf8(masked).ok()?).ok()?;
                    }
                }
            }
            self.copied = end;
        }
        self.advance(stack, path);
        Some(())
    }
}

/// Whether `a` and `b` are the same bytes. Keys are short: a few words compared here (the last
/// one overlapping the one before) cost less than a call to the C library's comparison.
fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], i: usize| u64::from_le_bytes(s[i..i + 8].try_into().unwrap_or_default());
    let half = |s: &[u8], i: usize| u32::from_le_bytes(s[i..i + 4].try_into().unwrap_or_default());
    match n {
        0..4 => a.iter().zip(b).all(|(p, q)| p == q),
        4..8 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        _ => (0..n - 8).step_by(8).all(|i| word(a, i) == word(b, i)) && word(a, n - 8) == word(b, n - 8),
    }
}

/// `raw` is an integer that serde_json reads as a 64-bit one and writes back as it is: an
/// optional `-`, then `0` alone (not after a `-`: serde_json reads `-0` as the float `-0.0`) or
/// up to 18 digits that do not start with `0`.
fn plain_integer(raw: &[u8]) -> bool {
    let digits = raw.strip_prefix(b"-").unwrap_or(raw);
    match digits {
        [b'0'] => digits.len() == raw.len(),
        [b'1'..=b'9', rest @ ..] => rest.len() < 18 && rest.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

fn skip_space(body: &[u8], mut at: usize) -> usize {
    while body.get(at).is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// Bytes of a number or of `true`, `false`, `null`.
fn is_scalar_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.')
}

/// The end (after the closing quote) of the string that starts at `start`, and whether it has
/// escapes; `None` when it does not end or holds a control character (which must be escaped).
fn string_end(body: &[u8], start: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    let mut i = start + 1;
    loop {
        i += first_special(body.get(i..)?)?;
        match body[i] {
            b'"' => return Some((i + 1, escaped)),
            b'\\' => {
                escaped = true;
                i += 2;
            }
            _ => return None,
        }
    }
}

/// Where the first byte of `s` that a JSON string cannot hold as it is (`"`, `\`, a control
/// character) is.
///
/// Eight bytes at a time in a word: most strings of a document are short, and a vector search
/// costs more to start than it saves there.
fn first_special(s: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte that is zero (exact for the lowest such byte, which is the one
    // looked at).
    let zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH;
    let mut words = s.chunks_exact(8);
    let mut at = 0;
    for w in words.by_ref() {
        let w = u64::from_le_bytes(w.try_into().unwrap_or_default());
        let hits = (w.wrapping_sub(ONES * 0x20) & !w & HIGH) | zero(w ^ (ONES * 0x22)) | zero(w ^ (ONES * 0x5c));
        if hits != 0 {
            return Some(at + hits.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    words.remainder().iter().position(|&b| b < 0x20 || b == b'"' || b == b'\\').map(|i| at + i)
}

/// The text of the JSON string token at `start..end` of `text` (with its quotes, read by
/// [`string_end`]): borrowed when it has no escapes; `None` when they are not valid.
fn decode(text: &str, start: usize, end: usize, escaped: bool) -> Option<std::borrow::Cow<'_, str>> {
    if !escaped {
        return text.get(start + 1..end - 1).map(std::borrow::Cow::Borrowed);
    }
    serde_json::from_str(text.get(start..end)?).ok().map(std::borrow::Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_compares_every_byte_of_every_length() {
        for n in 0..40_usize {
            let a: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(same(&a, &a.clone()), "{n} bytes");
            assert!(!same(&a, &a[..n.saturating_sub(1)]) || n == 0, "{n} bytes against one fewer");
            for i in 0..n {
                let mut b = a.clone();
                b[i] ^= 1;
                assert!(!same(&a, &b), "{n} bytes, byte {i} differs");
            }
        }
    }

    #[test]
    fn plain_integers_are_canonical_64_bit_ones() {
        for yes in ["0", "7", "-7", "123", "100000000000000000", "-999999999999999999"] {
            assert!(plain_integer(yes.as_bytes()), "{yes}");
        }
        for no in ["", "-", "-0", "00", "007", "1.0", "1e2", "+1", "1000000000000000000", " 1"] {
            assert!(!plain_integer(no.as_bytes()), "{no}");
        }
    }

    proptest::proptest! {
        /// A plain integer is one the parser reads and writes back as it came.
        #[test]
        fn a_plain_integer_is_spelled_back_as_it_came(
            raw in proptest::prop_oneof![
                "-?(0|[1-9][0-9]{0,19})",
                "-?[0-9]{1,20}",
                proptest::string::string_regex("-?[0-9]{0,3}[.eE+\\-]?[0-9]{0,3}").unwrap(),
            ],
        ) {
            if plain_integer(raw.as_bytes()) {
                let n: serde_json::Number = serde_json::from_str(&raw).unwrap();
                proptest::prop_assert_eq!(n.to_string(), raw);
            }
        }

        /// The word-at-a-time search finds what a byte-at-a-time one finds, wherever it is.
        #[test]
        fn first_special_is_the_first_byte_a_string_must_escape(
            s in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(&b"\"\\\x00\x1f\x20\x21\x5b\x5d\x7f\x80\xa2\xdc\xff"[..]),
                    proptest::num::u8::ANY,
                ],
                0..40,
            ),
        ) {
            let want = s.iter().position(|&b| b < 0x20 || b == b'"' || b == b'\\');
            proptest::prop_assert_eq!(first_special(&s), want);
        }
    }

    #[test]
    fn strings_end_at_their_closing_quote() {
        let ends = |s: &[u8]| string_end(s, 0);
        assert_eq!(ends(b"\"abc\" x"), Some((5, false)));
        assert_eq!(ends(b"\"0123456789abcdef\\\"x\","), Some((21, true)));
        assert_eq!(ends(b"\"a\\\\\""), Some((5, true)));
        assert_eq!(ends(b"\"abcdefghijk"), None, "no closing quote");
        assert_eq!(ends(b"\"abcdefgh\\"), None, "an escape at the end");
        assert_eq!(ends(b"\"abcdefghij\x0a\""), None, "a control character");
    }
}
