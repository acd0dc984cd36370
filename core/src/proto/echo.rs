//! Watches what an upstream sends back for the credential the gateway gave it.
//!
//! An upstream that reflects request headers (an echo or debug endpoint, an error such as
//! `invalid header x-api-key: …`) would hand the injected secret to the caller and into the
//! journal. The response is searched for each secret, across the boundaries of the pieces it
//! arrives in; a response that carries one is not delivered.

use std::sync::Arc;

use memchr::memmem::Finder;

/// Secrets shorter than this are not searched for: they would turn up by chance.
pub(crate) const MIN_SECRET: usize = 8;

/// A route's credential secrets, made ready to search for once, when the configuration is
/// loaded: building a searcher costs more than most responses take to search.
#[derive(Clone)]
pub struct Secrets {
    /// Those of at least [`MIN_SECRET`] bytes.
    finders: Arc<[Finder<'static>]>,
    /// One fewer than the longest secret's length.
    keep: usize,
}

impl Secrets {
    /// Searchers for `secrets` (those of at least [`MIN_SECRET`] bytes).
    pub fn new(secrets: &[Box<[u8]>]) -> Self {
        let finders: Arc<[Finder<'static>]> =
            secrets.iter().filter(|s| s.len() >= MIN_SECRET).map(|s| Finder::new(&s[..]).into_owned()).collect();
        let keep = finders.iter().map(|f| f.needle().len()).max().unwrap_or(0).saturating_sub(1);
        Self { finders, keep }
    }

    /// Whether there is no secret to search for.
    pub fn is_empty(&self) -> bool {
        self.finders.is_empty()
    }

    /// A watch over one response; `None` if there is nothing to search for.
    pub(crate) fn watch(&self) -> Option<EchoWatch> {
        (!self.is_empty()).then(|| EchoWatch { secrets: self.clone(), tail: Vec::new() })
    }

    /// Whether any value of `headers` carries a secret (each value on its own).
    pub(crate) fn in_headers(&self, headers: &hyper::HeaderMap) -> bool {
        headers.values().any(|v| self.finders.iter().any(|f| f.find(v.as_bytes()).is_some()))
    }
}

// Never the secrets themselves.
impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} searched for)", self.finders.len())
    }
}

/// Searches a response, piece by piece, for a route's credential secrets.
pub(crate) struct EchoWatch {
    secrets: Secrets,
    /// The last bytes seen (at most one fewer than the longest secret): a secret split between
    /// two pieces is found in them and the next piece's start.
    tail: Vec<u8>,
}

impl EchoWatch {
    /// Whether a secret appears in what has been seen so far, now that `piece` follows it.
    pub(crate) fn seen(&mut self, piece: &[u8]) -> bool {
        let (finders, keep) = (&self.secrets.finders, self.secrets.keep);
        if finders.iter().any(|f| f.find(piece).is_some()) {
            return true;
        }
        if !self.tail.is_empty() {
            let joint = self.tail.len();
            self.tail.extend_from_slice(&piece[..piece.len().min(keep)]);
            if finders.iter().any(|f| f.find(&self.tail).is_some()) {
                return true;
            }
            self.tail.truncate(joint);
        }
        // What a secret split at the next boundary could start with.
        if piece.len() >= keep {
            self.tail.clear();
            self.tail.extend_from_slice(&piece[piece.len() - keep..]);
        } else {
            self.tail.extend_from_slice(piece);
            let excess = self.tail.len().saturating_sub(keep);
            self.tail.drain(..excess);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_found_whole_or_split_across_pieces() {
        let secrets = Secrets::new(&[b"sk-upstream-0123456789".to_vec().into(), b"short".to_vec().into()]);
        let text = b"{\"error\":\"invalid header x-api-key: sk-upstream-0123456789\"}";
        // Every way of cutting the text into two or three pieces.
        for a in 0..=text.len() {
            for b in a..=text.len() {
                let mut w = secrets.watch().unwrap();
                let found = [&text[..a], &text[a..b], &text[b..]].iter().any(|p| w.seen(p));
                assert!(found, "cut at {a} and {b}");
            }
        }
        // Byte by byte.
        let mut w = secrets.watch().unwrap();
        assert!(text.chunks(1).any(|p| w.seen(p)));
        // Not there, however cut: nothing found (and a short secret is never searched for).
        let clean = b"{\"error\":\"invalid header x-api-key: sk-upstream-012345678 short\"}";
        for a in 0..=clean.len() {
            let mut w = secrets.watch().unwrap();
            assert!(!w.seen(&clean[..a]) && !w.seen(&clean[a..]), "cut at {a}");
        }
        let mut h = hyper::HeaderMap::new();
        h.insert("x-debug", hyper::header::HeaderValue::from_static("echo: sk-upstream-0123456789"));
        assert!(secrets.in_headers(&h));
        assert!(!secrets.in_headers(&hyper::HeaderMap::new()));
        assert!(Secrets::new(&[b"short".to_vec().into()]).watch().is_none());
        assert!(format!("{secrets:?}").find("sk-upstream").is_none(), "Debug never shows a secret");
    }
}
