//! The PHI masking engine: detectors, actions, and the maskers the drivers run on responses.
//!
//! - [`detect`]: the HIPAA Safe Harbor identifiers that can be found in text, each validated
//!   where a validation exists, plus custom regex and deny-list entities.
//! - [`Profile`]: what happens to each entity and to named fields (JSON key or path, PostgreSQL
//!   column, protobuf field) — redact, keep the last N, pseudonymize with HMAC-SHA-256, drop the
//!   field, NULL the value — chosen per route and per role.
//! - [`TextStream`]: text that arrives in pieces. It holds back only the shortest suffix that
//!   could still become a match and emits the rest at once, so the output of any split equals
//!   masking the whole text (up to [`MAX_HOLD`] bytes of one candidate).
//! - [`json`]: JSON documents and the streamed event shapes of LLM runtimes (OpenAI and
//!   Anthropic SSE deltas, Ollama NDJSON), re-serialized so the output stays valid.
//!
//! The engine never passes what it could not inspect: every error is a [`MaskError`], and the
//! drivers turn it into a refusal (fail closed). Counts of masked values per entity go into the
//! session's journal; the values never do.

pub mod body;
pub mod detect;
pub mod grpc;
pub mod json;
mod markup;
mod scout;
mod tables;
mod validate;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub use detect::{CustomEntity, DenyList, Detector, EntityId, Finding};

/// Masked text as a `String`, without a copy: masking keeps UTF-8 valid (findings are widened to
/// character boundaries), and anything else is replaced lossily rather than refused.
pub(crate) fn into_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Most text a stream holds back while one candidate grows. A longer candidate (a URL of several
/// kilobytes arriving in pieces) is judged on what has arrived.
pub const MAX_HOLD: usize = 2048;

/// Most streams (choices, blocks, event types) one response keeps: an upstream cannot make the
/// gateway keep unbounded state. Past it the response is cut off, since a value split across
/// the pieces of a stream that is not kept could not be judged whole.
pub const MAX_STREAMS: usize = 128;

/// What is done to a detected value or a named field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Left as it is.
    Keep,
    /// Replaced by `[PHI:ENTITY]`.
    Redact,
    /// Every letter and digit but the last N replaced by `*` (separators kept).
    Partial(usize),
    /// Replaced by `ENTITY_` and a stable token: HMAC-SHA-256 of the normalized value under the
    /// configured key, so the same value always gives the same token and analysts can join.
    Pseudonymize,
    /// The JSON field is removed (elsewhere: redacted).
    Drop,
    /// The PostgreSQL value becomes NULL, the JSON value `null` (elsewhere: redacted).
    Null,
}

impl Action {
    /// Parses `keep`, `redact`, `partial`, `partial:N`, `pseudonymize`, `drop`, `null`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "keep" | "none" => Self::Keep,
            "redact" => Self::Redact,
            "partial" => Self::Partial(4),
            "pseudonymize" | "pseudonymise" | "hash" => Self::Pseudonymize,
            "drop" => Self::Drop,
            "null" => Self::Null,
            other => Self::Partial(other.strip_prefix("partial:")?.parse().ok()?),
        })
    }
}

/// Why masking could not run. The response it concerned is not delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MaskError {
    /// The body is larger than the route inspects.
    #[error("the response body exceeds the inspection limit of {limit} bytes on a masked route")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body is compressed or encoded in a way the gateway does not decode.
    #[error("the response is encoded ({0}) and cannot be inspected on a masked route")]
    Encoded(String),
    /// The content cannot be masked (no schema for a binary format, say).
    #[error("the response cannot be masked: {0}")]
    Uninspectable(&'static str),
    /// A streamed response opened more streams of pieces (choices, blocks, event types) than
    /// the gateway keeps.
    #[error("the response streams more than {0} pieces of text at once on a masked route")]
    TooManyStreams(usize),
    /// A JSON document that must be re-serialized could not be.
    #[error("the masked JSON could not be re-serialized: {0}")]
    Json(#[source] serde_json::Error),
}

/// Which field a field rule names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldSelector {
    /// A JSON object key, anywhere in the document (case-insensitive).
    Key(String),
    /// A JSON path from the root: `$.patient.dob`, `$.entries[*].ssn`.
    Path(Vec<PathSeg>),
    /// A PostgreSQL result column, by name and, optionally, the table it comes from.
    Column {
        /// Table (optionally `schema.table`); `None` matches the column name in any result.
        table: Option<String>,
        /// Column name.
        column: String,
    },
    /// A protobuf field by full name (`pkg.Message.field`) or bare name.
    Proto(String),
}

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSeg {
    /// An object key.
    Key(String),
    /// Any array element (`[*]`) or a specific index.
    Index(Option<usize>),
}

impl PathSeg {
    /// The key of the member at the end of `path` (none for an array element).
    pub(crate) fn own_key(path: &[PathSeg]) -> Option<&str> {
        match path.last() {
            Some(PathSeg::Key(k)) => Some(k),
            _ => None,
        }
    }

    /// The nearest key above the end of `path`: the context of a value in an array too
    /// (`"phones": [6175550123]`).
    pub(crate) fn nearest_key(path: &[PathSeg]) -> Option<&str> {
        path.iter().rev().find_map(|s| match s {
            PathSeg::Key(k) => Some(k.as_str()),
            PathSeg::Index(_) => None,
        })
    }
}

impl FieldSelector {
    /// Parses a JSON path: `$.a.b`, `$.a[*].b`, `$.a[0]`.
    pub fn path(s: &str) -> Option<Self> {
        let rest = s.strip_prefix('$')?;
        let mut segs = Vec::new();
        let mut chars = rest;
        while !chars.is_empty() {
            if let Some(r) = chars.strip_prefix('.') {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                if end == 0 {
                    return None;
                }
                segs.push(PathSeg::Key(r[..end].to_owned()));
                chars = &r[end..];
            } else if let Some(r) = chars.strip_prefix('[') {
                let end = r.find(']')?;
                let inner = &r[..end];
                segs.push(PathSeg::Index(if inner == "*" { None } else { Some(inner.parse().ok()?) }));
                chars = &r[end + 1..];
            } else {
                return None;
            }
        }
        Some(Self::Path(segs))
    }
}

/// A field rule: the whole value of the field gets `action`, whatever it contains.
#[derive(Debug, Clone)]
pub struct FieldRule {
    /// Which field.
    pub selector: FieldSelector,
    /// What to do.
    pub action: Action,
    /// The label in replacements and counts (`[PHI:patient_name]`).
    pub label: String,
}

/// A masking profile: the actions for one audience.
#[derive(Debug)]
pub struct Profile {
    /// Profile name.
    pub name: String,
    detector: Arc<Detector>,
    actions: Vec<Action>,
    min_confidence: f32,
    /// Field rules, first match wins.
    pub fields: Vec<FieldRule>,
    key: Option<aws_lc_rs::hmac::Key>,
    keep_year: bool,
    date: Option<EntityId>,
    /// Each entity's redaction (`[PHI:SSN]`), written in one piece.
    redactions: Vec<Box<[u8]>>,
    /// No entity's name holds a byte a JSON string must escape (`"`, `\`, a control
    /// character): masking a string that needs no escape leaves one that needs none.
    pub(crate) plain_labels: bool,
}

/// Per-session counts of masked values, by entity or field label. Never the values. (Hashed:
/// a JSON document adds to it once per masked value.)
#[derive(Debug, Default)]
pub struct Tally(Mutex<rustc_hash::FxHashMap<String, u64>>);

impl Tally {
    /// Counts one masked value.
    pub fn add(&self, label: &str, n: u64) {
        self.add_each([(label, n)]);
    }

    /// Counts under one lock (a result row's counts, each of its entities).
    fn add_each<'l>(&self, counts: impl IntoIterator<Item = (&'l str, u64)>) {
        if let Ok(mut m) = self.0.lock() {
            for (label, n) in counts {
                // The label is allocated only the first time it is counted.
                match m.get_mut(label) {
                    Some(count) => *count += n,
                    None => {
                        m.insert(label.to_owned(), n);
                    }
                }
            }
        }
    }

    /// The counts so far.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().map(|m| m.iter().map(|(k, &n)| (k.clone(), n)).collect()).unwrap_or_default()
    }
}

/// How a [`Profile`] is made.
#[derive(Debug, Clone)]
pub struct ProfileSpec {
    /// Name.
    pub name: String,
    /// The action for an entity with no entry in `actions`.
    pub default_action: Action,
    /// Per-entity actions, by entity name.
    pub actions: Vec<(String, Action)>,
    /// Findings below this confidence are left alone.
    pub min_confidence: f32,
    /// Field rules.
    pub fields: Vec<FieldRule>,
    /// Dates keep their year (`[PHI:DATE:2023]`).
    pub keep_year: bool,
}

impl ProfileSpec {
    /// A profile that redacts every entity it detects, whatever its confidence.
    pub fn redact_all(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            default_action: Action::Redact,
            actions: Vec::new(),
            min_confidence: 0.0,
            fields: Vec::new(),
            keep_year: false,
        }
    }
}

/// Why a profile could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// An action names an entity no detector produces.
    #[error("masking profile {profile}: unknown entity {entity}")]
    UnknownEntity {
        /// Profile.
        profile: String,
        /// The name.
        entity: String,
    },
    /// Pseudonymization is asked for without a key.
    #[error("masking profile {0} pseudonymizes but [masking] has no pseudonym_key")]
    NoKey(String),
}

impl Profile {
    /// Builds a profile over `detector`. `key` is the pseudonymization key, if configured.
    pub fn new(detector: Arc<Detector>, spec: ProfileSpec, key: Option<&[u8]>) -> Result<Self, ProfileError> {
        let mut actions = vec![spec.default_action; detector.entities().len()];
        for (name, action) in &spec.actions {
            let id = detector
                .entity(name)
                .ok_or_else(|| ProfileError::UnknownEntity { profile: spec.name.clone(), entity: name.clone() })?;
            actions[id] = *action;
        }
        let pseudo =
            actions.contains(&Action::Pseudonymize) || spec.fields.iter().any(|f| f.action == Action::Pseudonymize);
        if pseudo && key.is_none() {
            return Err(ProfileError::NoKey(spec.name));
        }
        let date = detector.entity("DATE");
        let redactions = detector.entities().iter().map(|e| format!("[PHI:{e}]").into_bytes().into()).collect();
        let plain_labels = detector.entities().iter().all(|e| e.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\'));
        Ok(Self {
            name: spec.name,
            detector,
            actions,
            min_confidence: spec.min_confidence,
            fields: spec.fields,
            key: key.map(|k| aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, k)),
            keep_year: spec.keep_year,
            date,
            redactions,
            plain_labels,
        })
    }

    /// Whether this profile leaves an entity's values as they are.
    pub fn keeps(&self, entity: &str) -> bool {
        self.detector.entity(entity).is_some_and(|e| self.actions.get(e) == Some(&Action::Keep))
    }

    /// The detector set.
    pub fn detector(&self) -> &Arc<Detector> {
        &self.detector
    }

    /// Masks a whole text.
    pub fn mask_text(&self, text: &[u8], tally: &Tally) -> Vec<u8> {
        let findings = self.find(text);
        let mut out = Vec::with_capacity(text.len());
        self.apply(text, 0, text.len(), &findings, &mut out, tally);
        out
    }

    /// Masks `written` as if it read `read`, a view of it byte for byte as long (escapes read
    /// as the spaces they stand for): findings are judged in `read`, and `written` is sent
    /// where nothing is masked.
    pub fn mask_text_read_as(&self, read: &[u8], written: &[u8], tally: &Tally) -> Vec<u8> {
        assert_eq!(read.len(), written.len(), "a view byte for byte as long");
        let findings = self.find(read);
        let mut out = Vec::with_capacity(written.len());
        self.apply_with(read, 0..read.len(), &findings, &mut out, tally, &AsIs(written));
        out
    }

    /// Masks a whole string (the result is valid UTF-8: findings are widened to character
    /// boundaries).
    pub fn mask_str(&self, text: &str, tally: &Tally) -> String {
        into_string(self.mask_text(text.as_bytes(), tally))
    }

    /// Masks the value of a named field (a JSON key, a result column): the name is context for
    /// the keyword detectors, as if the text read `name: value` — so `"mrn": "028939"` and a
    /// `member_id` column are found although the value alone says nothing.
    pub fn mask_keyed(&self, key: &str, value: &[u8], tally: &Tally) -> Vec<u8> {
        let (hay, start) = keyed(key, value);
        let findings = self.find_keyed(&hay, start);
        let mut out = Vec::with_capacity(value.len());
        self.apply(&hay, start, hay.len(), &findings, &mut out, tally);
        out
    }

    /// [`Self::mask_keyed`] over a whole XML (or, with `html`, HTML) value: judged as its
    /// reader sees it, as [`Self::markup_stream`] does, and written as it arrived where nothing
    /// is masked.
    pub fn mask_markup_keyed(&self, key: &str, value: &[u8], html: bool, tally: &Tally) -> Vec<u8> {
        let mut source = markup::Source::new(html, Some(self.detector.clone()));
        let mut text = Vec::with_capacity(value.len());
        source.feed(value, &mut text, true);
        let (hay, start) = keyed(key, &text);
        let findings = self.find_keyed(&hay, start);
        let mut out = Vec::with_capacity(value.len());
        self.apply_with(&hay, start..hay.len(), &findings, &mut out, tally, &Shifted(&source, start));
        out
    }

    /// The findings in a whole text, with those its text tables give.
    fn find(&self, text: &[u8]) -> Vec<Finding> {
        self.find_keyed(text, 0)
    }

    /// The findings of a value scanned behind its key, `hay[..start]`: those that start in the
    /// value, with those its text tables give (the key is not a table's).
    fn find_keyed(&self, hay: &[u8], start: usize) -> Vec<Finding> {
        let mut findings = Vec::new();
        self.detector.scan(hay, 0, hay.len(), &mut findings);
        findings.retain(|f| f.start >= start);
        tables::add_rows(&self.detector, hay, start, &mut findings, |f| self.applies(f));
        findings
    }

    /// Whether a finding is masked: the profile does not keep its entity, and is sure enough.
    fn applies(&self, f: &Finding) -> bool {
        f.confidence >= self.min_confidence
            && self.actions.get(f.entity).copied().unwrap_or(Action::Redact) != Action::Keep
    }

    /// Writes `hay[from..to]` to `out` with each finding in it replaced.
    fn apply(&self, hay: &[u8], from: usize, to: usize, findings: &[Finding], out: &mut Vec<u8>, tally: &Tally) {
        self.apply_with(hay, from..to, findings, out, tally, &AsIs(hay));
    }

    /// [`Self::apply`] over a text read from other bytes (markup), which `written` writes.
    fn apply_with(
        &self,
        hay: &[u8],
        std::ops::Range { start: from, end: to }: std::ops::Range<usize>,
        findings: &[Finding],
        out: &mut Vec<u8>,
        tally: &Tally,
        written: &impl Written,
    ) {
        if findings.is_empty() {
            // Most values of a JSON document: the text as it came (markup may still have tags
            // to write).
            written.unmasked(from, to, out);
            return;
        }
        // Counted here and added to the tally once per entity: the tally takes a lock and
        // looks up a label. On the stack unless there are more than 11 custom and deny-list
        // entities.
        let entities = self.detector.entities().len();
        let (mut small, mut many) = ([0_u32; detect::BUILTIN.len() + 11], Vec::new());
        let counts = if entities <= small.len() {
            &mut small[..entities]
        } else {
            many.resize(entities, 0);
            &mut many[..]
        };
        self.apply_counted(hay, from..to, findings, out, written, counts);
        self.count(counts, tally);
    }

    /// Adds a table of counts (one slot per entity) to `tally`.
    fn count(&self, counts: &[u32], tally: &Tally) {
        if counts.iter().all(|&n| n == 0) {
            return;
        }
        let labels = self.detector.entities().iter().zip(counts);
        tally.add_each(labels.filter(|(_, n)| **n > 0).map(|(label, &n)| (label.as_str(), u64::from(n))));
    }

    /// [`Self::apply_with`], counting each masked value in `counts` (one slot per entity).
    fn apply_counted(
        &self,
        hay: &[u8],
        std::ops::Range { start: from, end: to }: std::ops::Range<usize>,
        findings: &[Finding],
        out: &mut Vec<u8>,
        written: &impl Written,
        counts: &mut [u32],
    ) {
        let mut at = from;
        for f in findings {
            if !self.applies(f) || f.start < at || f.end > to {
                continue;
            }
            let action = self.actions.get(f.entity).copied().unwrap_or(Action::Redact);
            let (s, e) = char_bounds(hay, f.start, f.end);
            let (s, e) = (s.max(at), e.min(to));
            if s >= e {
                continue;
            }
            written.unmasked(at, s, out);
            written.before_masked(s, e, out);
            let label = &self.detector.entities()[f.entity];
            // `partial` writes the value's own separators: only those that were in the input.
            let value =
                if matches!(action, Action::Partial(_)) { written.shown(hay, s, e) } else { (&hay[s..e]).into() };
            self.replace(label, Some(f.entity), &value, action, out);
            written.after_masked(s, e, out);
            counts[f.entity] += 1;
            at = e;
        }
        // Even when no text is left: markup may still have tags to write.
        written.unmasked(at, to, out);
    }

    /// The replacement for `value`.
    fn replace(&self, label: &str, entity: Option<EntityId>, value: &[u8], action: Action, out: &mut Vec<u8>) {
        match action {
            Action::Keep => out.extend_from_slice(value),
            Action::Partial(n) => {
                let total = value.iter().filter(|b| b.is_ascii_alphanumeric()).count();
                let mut seen = 0;
                for &b in value {
                    if b.is_ascii_alphanumeric() {
                        seen += 1;
                        out.push(if seen + n > total { b } else { b'*' });
                    } else {
                        out.push(b);
                    }
                }
            }
            Action::Pseudonymize => {
                out.extend_from_slice(label.as_bytes());
                out.push(b'_');
                out.extend_from_slice(self.token(label, value).as_bytes());
            }
            Action::Redact | Action::Drop | Action::Null => {
                let kept_year =
                    (self.keep_year && entity.is_some() && entity == self.date).then(|| year(value)).flatten();
                match (entity.and_then(|e| self.redactions.get(e)), kept_year) {
                    // An entity's redaction is prepared.
                    (Some(prepared), None) => out.extend_from_slice(prepared),
                    // A field rule's label, or a date that keeps its year.
                    (_, year) => {
                        out.extend_from_slice(b"[PHI:");
                        out.extend_from_slice(label.as_bytes());
                        if let Some(y) = year {
                            out.push(b':');
                            out.extend_from_slice(y.as_bytes());
                        }
                        out.push(b']');
                    }
                }
            }
        }
    }

    /// A stable token: 12 lowercase letters of HMAC-SHA-256(key, label ‖ 0 ‖ normalized value).
    /// Letters only, so a token never looks like a number another detector would find.
    fn token(&self, label: &str, value: &[u8]) -> String {
        let Some(key) = &self.key else { return "unkeyed".into() };
        let normal: Vec<u8> =
            value.iter().filter(|b| b.is_ascii_alphanumeric() || **b >= 0x80).map(u8::to_ascii_lowercase).collect();
        let mut ctx = aws_lc_rs::hmac::Context::with_key(key);
        ctx.update(label.as_bytes());
        ctx.update(&[0]);
        ctx.update(&normal);
        let tag = ctx.sign();
        tag.as_ref().iter().take(12).map(|b| char::from(b'a' + b % 26)).collect()
    }

    /// The replacement for a whole field value under `rule`.
    pub fn field_text(&self, rule: &FieldRule, value: &[u8], tally: &Tally) -> Vec<u8> {
        let mut out = Vec::new();
        self.replace(&rule.label, None, value, rule.action, &mut out);
        if rule.action != Action::Keep {
            tally.add(&rule.label, 1);
        }
        out
    }

    /// A new stream over this profile.
    pub fn stream(self: &Arc<Self>, tally: Arc<Tally>) -> TextStream {
        TextStream {
            cache: Some(self.detector.live_cache()),
            profile: self.clone(),
            buf: Vec::new(),
            base: 0,
            tally,
            source: None,
            rows: tables::StreamRows::default(),
        }
    }

    /// A new stream over HTML (`html`) or other XML: judged with character references decoded
    /// (and in HTML, bare inline tags taken out), sent as written wherever nothing is masked.
    pub fn markup_stream(self: &Arc<Self>, tally: Arc<Tally>, html: bool) -> TextStream {
        let mut stream = self.stream(tally);
        stream.source = Some(Box::new(markup::Source::new(html, Some(self.detector.clone()))));
        stream
    }

    /// The first field rule for a JSON key at `path`.
    // Inlined: asked for every value of a document, most often of a profile with no rules.
    #[inline]
    pub fn json_rule(&self, path: &[PathSeg]) -> Option<&FieldRule> {
        if self.fields.is_empty() {
            return None;
        }
        let key = PathSeg::own_key(path);
        self.fields.iter().find(|r| match &r.selector {
            FieldSelector::Key(k) => key.is_some_and(|key| key.eq_ignore_ascii_case(k)),
            FieldSelector::Path(p) => {
                p.len() == path.len()
                    && p.iter().zip(path).all(|(want, got)| match (want, got) {
                        (PathSeg::Key(a), PathSeg::Key(b)) => a == b,
                        (PathSeg::Index(None), PathSeg::Index(_)) => true,
                        (PathSeg::Index(Some(a)), PathSeg::Index(Some(b))) => a == b,
                        _ => false,
                    })
            }
            _ => false,
        })
    }
}

/// How a text that masking scanned is written out.
trait Written {
    /// Writes the text between findings, `text[a..b]`, as it arrived.
    fn unmasked(&self, a: usize, b: usize, out: &mut Vec<u8>);
    /// The characters of `text[a..b]` that were in the input (markup: not a space standing for
    /// a removed tag).
    fn shown<'t>(&self, text: &'t [u8], a: usize, b: usize) -> std::borrow::Cow<'t, [u8]> {
        text[a..b].into()
    }
    /// Writes, before the replacement of `text[a..b]`, what of its bytes must stay.
    fn before_masked(&self, _a: usize, _b: usize, _out: &mut Vec<u8>) {}
    /// Writes, after the replacement of `text[a..b]`, what of its bytes must stay.
    fn after_masked(&self, _a: usize, _b: usize, _out: &mut Vec<u8>) {}
}

/// `name: value` with the name's `_` and `-` read as spaces, and where the value starts.
fn keyed(key: &str, value: &[u8]) -> (Vec<u8>, usize) {
    let mut hay = Vec::with_capacity(key.len() + 2 + value.len());
    let start = key_prefix(key, &mut hay);
    hay.extend_from_slice(value);
    (hay, start)
}

/// Writes the `name: ` of [`keyed`] to `hay`; the length of `hay` after it.
fn key_prefix(key: &str, hay: &mut Vec<u8>) -> usize {
    let from = hay.len();
    hay.extend_from_slice(key.as_bytes());
    for b in &mut hay[from..] {
        if *b == b'_' || *b == b'-' {
            *b = b' ';
        }
    }
    hay.extend_from_slice(b": ");
    hay.len()
}

/// Masks the many short values of one document (or of one result row) in a row, as
/// [`Profile::mask_keyed`] and [`Profile::mask_text`] mask each, with the buffers reused from
/// value to value and the counts kept in a table until [`Values::count_into`]: a document of
/// records has thousands of values, and most hold nothing to mask.
///
/// `mask_keyed` is not built on this: for one value, setting up a `Values` cost 7 % more than
/// its own few lines. The JSON tests hold the two equal (the document read in its text uses
/// this, the tree walk `mask_keyed`), and so do the PostgreSQL masker's (its rows use this).
pub(crate) struct Values<'p> {
    profile: &'p Profile,
    /// `name: value` (or the value alone) as scanned.
    hay: Vec<u8>,
    findings: Vec<Finding>,
    /// The detector's caches, kept from value to value.
    caches: detect::Caches<'p>,
    /// Masked values, per entity.
    counts: Vec<u32>,
    /// The last value masked, when [`Values::mask`] said it changed.
    pub(crate) out: Vec<u8>,
}

/// The largest buffer [`Values::finish`] gives back, in bytes.
const KEPT_BUFFER: usize = 64 << 10;

/// The buffers of a [`Values`], kept from one use to the next (a PostgreSQL session masks its
/// results a row at a time).
#[derive(Debug, Default)]
pub(crate) struct ValueBuffers {
    hay: Vec<u8>,
    findings: Vec<Finding>,
    counts: Vec<u32>,
    out: Vec<u8>,
}

impl<'p> Values<'p> {
    pub(crate) fn new(profile: &'p Profile) -> Self {
        Self::with_buffers(profile, ValueBuffers::default())
    }

    /// A `Values` that masks into the buffers of an earlier one.
    pub(crate) fn with_buffers(profile: &'p Profile, buffers: ValueBuffers) -> Self {
        let ValueBuffers { hay, findings, mut counts, out } = buffers;
        counts.clear();
        counts.resize(profile.detector.entities().len(), 0);
        Values { profile, hay, findings, caches: detect::Caches::default(), counts, out }
    }

    /// Adds the counts to `tally`, and gives the buffers back for the next `Values`. A buffer a
    /// large value grew is dropped, not kept for the rest of a session.
    pub(crate) fn finish(self, tally: &Tally) -> ValueBuffers {
        self.count_into(tally);
        fn kept<T>(buffer: Vec<T>) -> Vec<T> {
            if buffer.capacity() * size_of::<T>() > KEPT_BUFFER { Vec::new() } else { buffer }
        }
        ValueBuffers { hay: kept(self.hay), findings: kept(self.findings), counts: self.counts, out: kept(self.out) }
    }

    /// Masks `value` into `self.out`, the value of the field `key` when there is one (which is
    /// context, as in [`Profile::mask_keyed`]); false when masking leaves it as it is.
    pub(crate) fn mask(&mut self, key: Option<&str>, value: &[u8]) -> bool {
        self.mask_lines(key, value, true, None)
    }

    /// [`Self::mask`], told whether `value` may hold a line break, and so a text table: a JSON
    /// string written with no escape holds none, and most values of a document are such. With
    /// a `memo` (see [`detect::KeyMemo`]) that the caller keeps for the values of this one
    /// `key` in this `Values`, the key's prefix is not searched again.
    pub(crate) fn mask_lines(
        &mut self,
        key: Option<&str>,
        value: &[u8],
        lines: bool,
        mut memo: Option<&mut detect::KeyMemo>,
    ) -> bool {
        self.findings.clear();
        let (hay, start) = match key {
            Some(key) => {
                self.hay.clear();
                // The prefix is written once per memo (per key), then copied.
                let start = match memo.as_deref_mut() {
                    Some(memo) if !memo.written.is_empty() => {
                        self.hay.extend_from_slice(&memo.written);
                        #[cfg(debug_assertions)]
                        {
                            let mut want = Vec::new();
                            key_prefix(key, &mut want);
                            debug_assert_eq!(memo.written, want, "a key memo is used with one key");
                        }
                        memo.written.len()
                    }
                    Some(memo) => {
                        let start = key_prefix(key, &mut self.hay);
                        memo.written.extend_from_slice(&self.hay);
                        start
                    }
                    None => key_prefix(key, &mut self.hay),
                };
                self.hay.extend_from_slice(value);
                (&self.hay[..], start)
            }
            None => (value, 0),
        };
        match memo {
            Some(memo) if start > 0 => {
                self.profile.detector.scan_keyed(hay, start, &mut self.findings, &mut self.caches, memo)
            }
            _ => self.profile.detector.scan_text(hay, &mut self.findings, &mut self.caches),
        }
        // A finding that starts in the key is not the value's.
        self.findings.retain(|f| f.start >= start);
        if lines {
            let profile = self.profile;
            tables::add_rows(&profile.detector, hay, start, &mut self.findings, |f| profile.applies(f));
        }
        if self.findings.is_empty() {
            return false;
        }
        self.out.clear();
        self.profile.apply_counted(hay, start..hay.len(), &self.findings, &mut self.out, &AsIs(hay), &mut self.counts);
        self.out != value
    }

    /// Adds the counts to `tally`.
    pub(crate) fn count_into(&self, tally: &Tally) {
        self.profile.count(&self.counts, tally);
    }
}

/// A written text scanned behind a prefix of this many bytes (a key) that is not written.
struct Shifted<'a, W>(&'a W, usize);

impl<W: Written> Written for Shifted<'_, W> {
    fn unmasked(&self, a: usize, b: usize, out: &mut Vec<u8>) {
        self.0.unmasked(a - self.1, b - self.1, out);
    }
    fn shown<'t>(&self, text: &'t [u8], a: usize, b: usize) -> std::borrow::Cow<'t, [u8]> {
        self.0.shown(&text[self.1..], a - self.1, b - self.1)
    }
    fn before_masked(&self, a: usize, b: usize, out: &mut Vec<u8>) {
        self.0.before_masked(a - self.1, b - self.1, out);
    }
    fn after_masked(&self, a: usize, b: usize, out: &mut Vec<u8>) {
        self.0.after_masked(a - self.1, b - self.1, out);
    }
}

/// A text that arrived as it is scanned.
struct AsIs<'a>(&'a [u8]);

impl Written for AsIs<'_> {
    fn unmasked(&self, a: usize, b: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0[a..b]);
    }
}

/// The four digits of a year in a date value, if it has one.
fn year(value: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(value).ok()?;
    s.split(|c: char| !c.is_ascii_digit()).find(|p| p.len() == 4 && (p.starts_with("19") || p.starts_with("20")))
}

/// How many bytes at the end of `b` are the start of a UTF-8 character whose other bytes have
/// not arrived yet.
fn incomplete_utf8_tail(b: &[u8]) -> usize {
    for back in 1..=3.min(b.len()) {
        let byte = b[b.len() - back];
        if is_continuation(byte) {
            continue;
        }
        let need = match byte {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => return 0,
        };
        return if back < need { back } else { 0 };
    }
    0
}

/// How many bytes at the end of `b` are a run of UTF-8 continuation bytes right after an ASCII
/// byte (no character's): more of them may come, and a finding that ends before the run is
/// widened over all of it (see [`char_bounds`]). None past [`MAX_HOLD`] bytes.
fn stray_continuation_tail(b: &[u8]) -> usize {
    let run = b.iter().rev().take(MAX_HOLD + 1).take_while(|&&c| is_continuation(c)).count();
    match b.len().checked_sub(run + 1) {
        Some(i) if run > 0 && run <= MAX_HOLD && b[i] < 0x80 => run,
        _ => 0,
    }
}

/// A UTF-8 continuation byte (`10xxxxxx`): no character starts with it.
fn is_continuation(b: u8) -> bool {
    (0x80..0xc0).contains(&b)
}

/// `start..end` widened to UTF-8 character boundaries.
fn char_bounds(hay: &[u8], mut start: usize, mut end: usize) -> (usize, usize) {
    while start > 0 && hay.get(start).is_some_and(|&b| is_continuation(b)) {
        start -= 1;
    }
    while end < hay.len() && is_continuation(hay[end]) {
        end += 1;
    }
    (start, end)
}

/// Text arriving in pieces, masked as it comes.
#[derive(Debug)]
pub struct TextStream {
    profile: Arc<Profile>,
    /// For the detector's live DFA; given back to the detector when the stream is dropped.
    cache: Option<regex_automata::hybrid::dfa::Cache>,
    /// Look-behind context, then text not yet emitted (from `base`).
    buf: Vec<u8>,
    base: usize,
    tally: Arc<Tally>,
    /// Markup: `buf` holds the text decoded, this the bytes it was read from.
    source: Option<Box<markup::Source>>,
    /// The text tables read so far.
    rows: tables::StreamRows,
}

impl Drop for TextStream {
    fn drop(&mut self) {
        // Not from a stream cut short by a panic, which may have left its cache half changed.
        if !std::thread::panicking()
            && let Some(cache) = self.cache.take()
        {
            self.profile.detector.give_back(cache);
        }
    }
}

impl TextStream {
    /// Takes the next piece; returns the masked text that is settled.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        match &mut self.source {
            None => self.buf.extend_from_slice(chunk),
            Some(src) => src.feed(chunk, &mut self.buf, false),
        }
        // A character cut by the chunking waits for its last bytes: the text is judged only as
        // far as it is whole. So does a run of stray continuation bytes after an ASCII byte:
        // a finding that ends at that byte is widened over the whole run.
        let whole = self.buf.len() - incomplete_utf8_tail(&self.buf);
        let whole = whole - stray_continuation_tail(&self.buf[self.base.min(whole)..whole]);
        let det = &self.profile.detector;
        // Only `drop` takes the cache; a new one, were it gone, would cost time, not answers.
        let cache = self.cache.get_or_insert_with(|| det.live_cache());
        let mut p = det.live_from(cache, &self.buf[..whole], self.base, MAX_HOLD);
        while p > self.base && p < whole && is_continuation(self.buf[p]) {
            p -= 1;
        }
        self.rows.read(det, &self.buf, whole);
        let p = self.rows.hold(p);
        if p <= self.base {
            return Vec::new();
        }
        self.emit_final(p, whole)
    }

    /// The end of the text: everything held back, masked.
    pub fn finish(&mut self) -> Vec<u8> {
        if let Some(src) = &mut self.source {
            src.feed(&[], &mut self.buf, true);
        }
        self.rows.finish(&self.profile.detector, &self.buf);
        let n = self.buf.len();
        self.emit_final(n, n)
    }

    /// Emits `base..until` (and past it, a match that started before it), judging the text as
    /// ending at `whole`.
    fn emit_final(&mut self, until: usize, whole: usize) -> Vec<u8> {
        let mut findings = Vec::new();
        let hay = &self.buf[..whole];
        self.profile.detector.scan(hay, self.base, until, &mut findings);
        let profile = &self.profile;
        self.rows.take(until, &mut findings, |f| profile.applies(f));
        // A match that started before `until` is settled even where it runs past it, to the end
        // of the character it ends in.
        let mut to = findings.iter().map(|f| f.match_end).max().unwrap_or(until).max(until).min(whole);
        while to < whole && is_continuation(hay[to]) {
            to += 1;
        }
        let mut out = Vec::with_capacity(to - self.base);
        match &self.source {
            None => self.profile.apply(hay, self.base, to, &findings, &mut out, &self.tally),
            Some(src) => self.profile.apply_with(hay, self.base..to, &findings, &mut out, &self.tally, src.as_ref()),
        }
        self.base = to;
        self.rows.emitted(to);
        if self.base > 4 * detect::LOOKBEHIND {
            // Not the start of a line that may still be a table's header.
            let cut = (self.base - detect::LOOKBEHIND).min(self.rows.needed());
            if let Some(src) = &mut self.source {
                src.trim(cut);
            }
            self.buf.drain(..cut);
            self.base -= cut;
            self.rows.shift(cut);
        }
        out
    }
}

/// Fuzz entry point: the first byte picks how the rest is cut (a chunk size) and the second
/// which masker runs — the text stream, the SSE body masker over the same bytes, the JSON
/// document masker over the whole rest, or the markup stream. Nothing may panic; the text
/// stream's output for any cut must equal masking the whole input at once, and the markup
/// stream's the output for one piece; a JSON document's output must read as the tree walk's.
pub fn fuzz_stream(data: &[u8]) {
    let [size, which, rest @ ..] = data else { return };
    static PROFILE: std::sync::OnceLock<Option<Arc<Profile>>> = std::sync::OnceLock::new();
    let Some(profile) = PROFILE
        .get_or_init(|| {
            let det = Arc::new(Detector::new(&[], &[]).ok()?);
            let spec = ProfileSpec::redact_all("fuzz");
            Profile::new(det, spec, None).ok().map(Arc::new)
        })
        .clone()
    else {
        return;
    };
    let step = usize::from(*size).max(1);
    let tally = Arc::new(Tally::default());
    if which % 4 == 3 {
        // Markup: any cut gives the bytes of one piece.
        let run = |step: usize| {
            let mut s = profile.markup_stream(Arc::new(Tally::default()), true);
            let mut out = Vec::new();
            for chunk in rest.chunks(step) {
                out.extend(s.push(chunk));
            }
            out.extend(s.finish());
            out
        };
        if rest.len() <= MAX_HOLD {
            assert_eq!(run(step), run(rest.len().max(1)), "a cut changed the masked markup");
        }
    } else if which % 4 == 2 {
        // A document is masked if and only if it parses; anything else is refused.
        let out = json::mask_document(&profile, rest, &tally);
        let parsed = serde_json::from_slice::<serde_json::Value>(rest);
        assert_eq!(out.is_ok(), parsed.is_ok(), "masked or refused against what parses: {out:?}");
        if let (Ok(out), Ok(mut tree)) = (out, parsed) {
            json::mask_value(&profile, &mut tree, &Tally::default());
            let got = serde_json::from_slice::<serde_json::Value>(&out).ok();
            assert_eq!(got, Some(tree), "the document masked in its text differs from the tree walk");
        }
    } else if which % 4 == 0 {
        let mut s = profile.stream(tally.clone());
        let mut out = Vec::new();
        for chunk in rest.chunks(step) {
            out.extend(s.push(chunk));
        }
        out.extend(s.finish());
        if rest.len() <= MAX_HOLD {
            assert_eq!(out, profile.mask_text(rest, &tally), "a cut changed the masked text");
        }
    } else if let Ok(mut m) = body::BodyMasker::new(body::BodyKind::Sse, profile, tally) {
        let mut dec = airlock_decoders::sse::SseDecoder::default();
        let mut buf = bytes::BytesMut::new();
        for chunk in rest.chunks(step) {
            buf.extend_from_slice(chunk);
            while let Ok(Some(block)) = airlock_decoders::Decoder::decode(&mut dec, &mut buf) {
                let _ = m.unit(block.raw);
            }
        }
        let _ = m.finish();
    }
}

#[cfg(test)]
mod tests;
