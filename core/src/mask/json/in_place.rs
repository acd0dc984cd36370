//! A JSON document masked in its own text.
//!
//! The tree walk (parse into a `Value`, mask, serialize) builds and frees a node per value and
//! writes the whole document again, with its keys sorted. Here the text is read once, token by
//! token: a string or number that masking changes is replaced, everything else — key order,
//! spacing, how numbers are spelled — is copied as it came. Each value gets exactly what the tree
//! walk gives it (the same key context, field rules and counts); a test compares the two on
//! generated documents.
//!
//! What this path does not do, it leaves to the tree walk (it answers `None` before counting
//! anything): a field rule that drops a field or applies to an object or array, a side-channel
//! field (`logprobs`, Ollama's `context`), a string that may be an encoded payload (`blob`,
//! `data`, `b64_json`), an object key that itself holds PHI, a number whose
//! spelling masks differently from the tree walk's spelling of it, and text that is not valid
//! JSON. One difference is deliberate: a key that appears twice in an object keeps both values
//! here, each masked and counted, where the tree walk keeps only the last.

use serde::de::IgnoredAny;
use serde_json::Value;

use super::{CleanKeys, field_value, mask_number, side_channel_key};
use crate::mask::{PathSeg, Profile, Tally, Values};

/// One open container.
enum Frame {
    /// An object, and whether the key of the member being read is on the path (false while a
    /// key is expected).
    Object(bool),
    /// An array, and the index of the next element.
    Array(usize),
}

/// Masks `body` (a whole JSON document) in place; `None` when the tree walk must do it.
pub(super) fn mask(profile: &Profile, body: &[u8], tally: &Tally) -> Option<Vec<u8>> {
    // Valid JSON first, so the reader below can trust the grammar. (`IgnoredAny` has no nesting
    // limit, and neither has the reader: it keeps its own stack and does not recurse.)
    serde_json::from_slice::<IgnoredAny>(body).ok()?;
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
    };
    let mut keys = CleanKeys::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut path: Vec<PathSeg> = Vec::new();
    let mut at = 0;
    loop {
        at = skip_space(body, at);
        let Some(&b) = body.get(at) else { break };
        match b {
            b'{' => {
                doc.enter(&mut stack, &mut path)?;
                stack.push(Frame::Object(false));
                at += 1;
            }
            b'[' => {
                doc.enter(&mut stack, &mut path)?;
                stack.push(Frame::Array(0));
                at += 1;
            }
            b'}' | b']' => {
                // The container was the value of its parent's current place.
                stack.pop();
                doc.advance(&mut stack, &mut path);
                at += 1;
            }
            b',' | b':' => at += 1,
            b'"' => {
                let end = string_end(body, at)?;
                if let Some(Frame::Object(keyed @ false)) = stack.last_mut() {
                    let k = decode(text, at, end)?;
                    if side_channel_key(&k) || !keys.is_clean(profile, &k) {
                        return None;
                    }
                    // The key goes on the path in a string a finished key left behind.
                    let mut key = doc.spare.pop().unwrap_or_default();
                    key.clear();
                    key.push_str(&k);
                    path.push(PathSeg::Key(key));
                    *keyed = true;
                } else {
                    doc.value(&mut stack, &mut path, at, end, Kind::String)?;
                }
                at = end;
            }
            _ => {
                // A number, `true`, `false` or `null`.
                let end = at + body[at..].iter().position(|&c| !is_scalar_byte(c)).unwrap_or(body.len() - at);
                let kind = if matches!(b, b't' | b'f' | b'n') { Kind::Literal } else { Kind::Number };
                doc.value(&mut stack, &mut path, at, end, kind)?;
                at = end;
            }
        }
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
    String,
    Number,
    Literal,
}

/// What replaces a value.
enum New {
    /// This JSON text.
    Json(Vec<u8>),
    /// The text [`Values`] masked last, as a JSON string.
    Masked,
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
}

impl Doc<'_> {
    /// A container starts where a value is expected: a field rule on its place sends the
    /// document to the tree walk.
    fn enter(&mut self, stack: &mut [Frame], path: &mut Vec<PathSeg>) -> Option<()> {
        if Self::place(stack, path) && self.profile.json_rule(path).is_some() {
            return None;
        }
        Some(())
    }

    /// Puts the place of the value about to be read on the path (an object's key is there
    /// already); false at the top level.
    fn place(stack: &[Frame], path: &mut Vec<PathSeg>) -> bool {
        match stack.last() {
            Some(Frame::Object(_)) => true,
            Some(Frame::Array(i)) => {
                path.push(PathSeg::Index(Some(*i)));
                true
            }
            None => false,
        }
    }

    /// Moves the innermost container past its current value, taking its place off the path.
    fn advance(&mut self, stack: &mut [Frame], path: &mut Vec<PathSeg>) {
        match stack.last_mut() {
            Some(Frame::Object(keyed)) => *keyed = false,
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
        let inside = Self::place(stack, path);
        let raw = &self.body[start..end];
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
                // An encoded payload (`blob`, `b64_json`, MCP `data`) is the tree walk's.
                Kind::String if matches!(path.last(), Some(PathSeg::Key(k)) if super::BASE64_KEYS.contains(&k.as_str())) =>
                {
                    return None;
                }
                Kind::String => {
                    let s = decode(self.text, start, end)?;
                    // The key, if the string has one, is context (`"mrn": "028939"`).
                    let key = match path.last() {
                        Some(PathSeg::Key(k)) => Some(k.as_str()),
                        _ => None,
                    };
                    self.values.mask(key, s.as_bytes()).then_some(New::Masked)
                }
                Kind::Number => {
                    // The number as the tree walk spells it (`1e2` is `100.0` there).
                    let n: serde_json::Number = serde_json::from_slice(raw).ok()?;
                    let text = n.to_string();
                    // The nearest key above it is context (`"phones": [6175550123]`).
                    let key = path.iter().rev().find_map(|s| match s {
                        PathSeg::Key(k) => Some(k.as_str()),
                        PathSeg::Index(_) => None,
                    });
                    if self.values.mask(key, text.as_bytes()) {
                        Some(New::Masked)
                    } else if raw != text.as_bytes() && mask_number(self.profile, path, raw, &Tally::default()) != raw {
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
                // Masking keeps text UTF-8 (it widens findings to character boundaries).
                New::Masked => {
                    serde_json::to_writer(&mut self.out, std::str::from_utf8(&self.values.out).ok()?).ok()?
                }
            }
            self.copied = end;
        }
        self.advance(stack, path);
        Some(())
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

/// The end (after the closing quote) of the string that starts at `start`.
fn string_end(body: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        let rel = memchr::memchr2(b'"', b'\\', body.get(i..)?)?;
        i += rel;
        if body[i] == b'\\' {
            i += 2;
        } else {
            return Some(i + 1);
        }
    }
}

/// The text of the JSON string token at `start..end` of `text` (with its quotes): borrowed when
/// it has no escapes.
fn decode(text: &str, start: usize, end: usize) -> Option<std::borrow::Cow<'_, str>> {
    let inner = text.get(start + 1..end - 1)?;
    if memchr::memchr(b'\\', inner.as_bytes()).is_none() {
        return Some(std::borrow::Cow::Borrowed(inner));
    }
    serde_json::from_str(text.get(start..end)?).ok().map(std::borrow::Cow::Owned)
}
