//! Watches what an upstream sends back for the credential the gateway gave it.
//!
//! An upstream that reflects request headers (an echo or debug endpoint, an error such as
//! `invalid header x-api-key: …`) would hand the injected secret to the caller and into the
//! journal. The response is searched for each secret, across the boundaries of the pieces it
//! arrives in; a response that carries one is not delivered.

use memchr::memmem::Finder;

/// Secrets shorter than this are not searched for: they would turn up by chance.
pub(crate) const MIN_SECRET: usize = 8;

/// Searches a response, piece by piece, for a route's credential secrets.
pub(crate) struct EchoWatch {
    finders: Vec<Finder<'static>>,
    /// The last bytes seen (one fewer than the longest secret): a secret split between two
    /// pieces is found in them and the next piece's start.
    tail: Vec<u8>,
    keep: usize,
}

impl EchoWatch {
    /// A watch for `secrets` (those of at least [`MIN_SECRET`] bytes); `None` if there is none.
    pub(crate) fn new(secrets: &[Box<[u8]>]) -> Option<Self> {
        let finders: Vec<Finder<'static>> =
            secrets.iter().filter(|s| s.len() >= MIN_SECRET).map(|s| Finder::new(&s[..]).into_owned()).collect();
        let keep = finders.iter().map(|f| f.needle().len()).max()?.saturating_sub(1);
        Some(Self { finders, tail: Vec::with_capacity(keep * 2), keep })
    }

    /// Whether a secret appears in what has been seen so far, now that `piece` follows it.
    pub(crate) fn seen(&mut self, piece: &[u8]) -> bool {
        if self.finders.iter().any(|f| f.find(piece).is_some()) {
            return true;
        }
        if !self.tail.is_empty() {
            let joint = self.tail.len();
            self.tail.extend_from_slice(&piece[..piece.len().min(self.keep)]);
            if self.finders.iter().any(|f| f.find(&self.tail).is_some()) {
                return true;
            }
            self.tail.truncate(joint);
        }
        // What a secret split at the next boundary could start with.
        if piece.len() >= self.keep {
            self.tail.clear();
            self.tail.extend_from_slice(&piece[piece.len() - self.keep..]);
        } else {
            self.tail.extend_from_slice(piece);
            let excess = self.tail.len().saturating_sub(self.keep);
            self.tail.drain(..excess);
        }
        false
    }

    /// Whether any value of `headers` carries a secret.
    pub(crate) fn in_headers(secrets: &[Box<[u8]>], headers: &hyper::HeaderMap) -> bool {
        let Some(mut watch) = Self::new(secrets) else { return false };
        headers.values().any(|v| {
            watch.tail.clear();
            watch.seen(v.as_bytes())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_found_whole_or_split_across_pieces() {
        let secrets: Vec<Box<[u8]>> = vec![b"sk-upstream-0123456789".to_vec().into(), b"short".to_vec().into()];
        let text = b"{\"error\":\"invalid header x-api-key: sk-upstream-0123456789\"}";
        // Every way of cutting the text into two or three pieces.
        for a in 0..=text.len() {
            for b in a..=text.len() {
                let mut w = EchoWatch::new(&secrets).unwrap();
                let found = [&text[..a], &text[a..b], &text[b..]].iter().any(|p| w.seen(p));
                assert!(found, "cut at {a} and {b}");
            }
        }
        // Byte by byte.
        let mut w = EchoWatch::new(&secrets).unwrap();
        assert!(text.chunks(1).any(|p| w.seen(p)));
        // Not there, however cut: nothing found (and a short secret is never searched for).
        let clean = b"{\"error\":\"invalid header x-api-key: sk-upstream-012345678 short\"}";
        for a in 0..=clean.len() {
            let mut w = EchoWatch::new(&secrets).unwrap();
            assert!(!w.seen(&clean[..a]) && !w.seen(&clean[a..]), "cut at {a}");
        }
        let mut h = hyper::HeaderMap::new();
        h.insert("x-debug", hyper::header::HeaderValue::from_static("echo: sk-upstream-0123456789"));
        assert!(EchoWatch::in_headers(&secrets, &h));
        assert!(EchoWatch::new(&[b"short".to_vec().into()]).is_none());
    }
}
