//! JSON: whole documents, and the event streams of LLM runtimes.
//!
//! A document is walked once: a value whose key or path has a field rule gets that rule's action
//! whatever it holds; every other string is scanned by the detectors. Object keys are kept.
//!
//! An event stream (SSE `data:` JSON, NDJSON lines) carries text in pieces: OpenAI chat and
//! completion deltas (`choices[].delta.content`, `…reasoning_content`, tool-call `arguments`,
//! `choices[].text`), the Responses API (`response.output_text.delta`), Anthropic
//! (`content_block_delta` → `delta.text` / `partial_json` / `thinking`) and Ollama (`response`,
//! `message.content`, `thinking`). Each such field is one [`TextStream`] per choice or block, so
//! a value split across events is still found; everything else in an event is masked whole.
//! Held-back text is released into the event that ends its piece (`finish_reason`, Ollama's
//! `done`), into an extra delta event before Anthropic's `content_block_stop` or the Responses
//! API's `…done`, or — at `[DONE]` or the end of the stream — into extra events shaped like the
//! last one that carried that field.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::{Action, PathSeg, Profile, Tally, TextStream};

mod in_place;

/// Masks a JSON document in place.
pub fn mask_value(profile: &Profile, v: &mut Value, tally: &Tally) {
    let mut path = Vec::new();
    walk(profile, v, &mut path, &[], tally, &mut CleanKeys::default());
}

/// Most object keys one document remembers as clean.
const CLEAN_KEYS_MAX: usize = 1024;

/// Object keys already found to hold nothing to mask, within one document: an array of records
/// repeats the same few keys thousands of times, and each would be searched again. Hashed with
/// SipHash, not FxHash: the keys come from bodies, and FxHash has no key, so keys that collide
/// would be easy to make.
#[derive(Debug, Default)]
struct CleanKeys(std::collections::HashSet<String>);

impl CleanKeys {
    fn is_clean(&mut self, profile: &Profile, k: &str) -> bool {
        if self.0.contains(k) {
            return true;
        }
        let clean = profile.mask_str(k, &Tally::default()) == k;
        if clean && self.0.len() < CLEAN_KEYS_MAX {
            self.0.insert(k.to_owned());
        }
        clean
    }
}

/// Masks a JSON body. Most documents are masked in their own text (see `in_place`): key order,
/// spacing and number spelling are kept. The rest are parsed, masked and re-serialized. A body
/// that is not JSON is refused.
pub fn mask_document(profile: &Profile, body: &[u8], tally: &Tally) -> Result<Vec<u8>, super::MaskError> {
    if let Some(out) = in_place::mask(profile, body, tally) {
        return Ok(out);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(mut v) => {
            mask_value(profile, &mut v, tally);
            let mut out = serde_json::to_vec(&v).map_err(super::MaskError::Json)?;
            if body.ends_with(b"\n") {
                out.push(b'\n');
            }
            Ok(out)
        }
        // Not JSON to this reader (a lone surrogate escape, `NaN`, …) though a lenient one may
        // read it: refused, not scanned as text with its escapes unread.
        Err(_) => Err(super::MaskError::Uninspectable("a JSON document that does not parse")),
    }
}

/// What a field rule does to a value: `None` means remove it.
fn field_value(profile: &Profile, rule: &super::FieldRule, v: &Value, tally: &Tally) -> Option<Value> {
    match rule.action {
        Action::Keep => Some(v.clone()),
        Action::Drop => {
            tally.add(&rule.label, 1);
            None
        }
        Action::Null => {
            tally.add(&rule.label, 1);
            Some(Value::Null)
        }
        _ => {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Null => return Some(Value::Null),
                other => other.to_string(),
            };
            let out = profile.field_text(rule, text.as_bytes(), tally);
            Some(Value::String(super::into_string(out)))
        }
    }
}

fn walk(
    profile: &Profile,
    v: &mut Value,
    path: &mut Vec<PathSeg>,
    skip: &[Vec<PathSeg>],
    tally: &Tally,
    keys: &mut CleanKeys,
) {
    if skip.iter().any(|s| s == path) {
        return;
    }
    match v {
        Value::String(s) => {
            let masked = mask_string(profile, path, s, tally);
            if masked != *s {
                *s = masked;
            }
        }
        Value::Number(n) => {
            let text = n.to_string();
            let masked = mask_number(profile, path, text.as_bytes(), tally);
            if masked != text.as_bytes() {
                *v = Value::String(super::into_string(masked));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(PathSeg::Index(Some(i)));
                if let Some(rule) = profile.json_rule(path) {
                    *item = field_value(profile, rule, item, tally).unwrap_or(Value::Null);
                } else {
                    walk(profile, item, path, skip, tally, keys);
                }
                path.pop();
            }
        }
        Value::Object(map) => {
            let mut dropped = Vec::new();
            let mime = map.get("mimeType").and_then(Value::as_str).map(str::to_owned);
            let under_audio = PathSeg::own_key(path) == Some("audio");
            for (k, item) in map.iter_mut() {
                // Fields that repeat the text token by token (OpenAI `logprobs`) or encode the
                // whole conversation (Ollama `context`): a split value could not be found there.
                if side_channel(k, item) {
                    tally.add("side_channel", 1);
                    *item = Value::Null;
                    continue;
                }
                if let Value::String(encoded) = item
                    && let Some(mime) = payload_type(k, mime.as_deref(), under_audio)
                {
                    *encoded = mask_payload(profile, encoded, mime, tally);
                    continue;
                }
                path.push(PathSeg::Key(k.clone()));
                if let Some(rule) = profile.json_rule(path) {
                    match field_value(profile, rule, item, tally) {
                        Some(new) => *item = new,
                        None => dropped.push(k.clone()),
                    }
                } else {
                    walk(profile, item, path, skip, tally, keys);
                }
                path.pop();
            }
            for k in dropped {
                map.remove(&k);
            }
            // Keys are text too (`{"jane@example.org": …}`).
            if !map.keys().all(|k| keys.is_clean(profile, k)) {
                let old = std::mem::take(map);
                for (k, item) in old {
                    map.insert(profile.mask_str(&k, tally), item);
                }
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

/// Whether a key's string value may be a base64 payload (see [`payload_type`]).
pub(super) fn payload_key(k: &str) -> bool {
    matches!(k.as_bytes(), b"blob" | b"data" | b"b64_json")
}

/// The media type of a base64 payload at key `k` of an object: MCP resource `blob`s and
/// image/audio `data` (beside their `mimeType`), OpenAI `b64_json` images and `audio.data`.
/// `None` when the value is not one (`""` when its type is not given).
fn payload_type<'m>(k: &str, mime: Option<&'m str>, under_audio: bool) -> Option<&'m str> {
    match (k, mime) {
        ("blob" | "data", Some(m)) => Some(m),
        ("b64_json", _) => Some(""),
        ("data", None) if under_audio => Some(""),
        _ => None,
    }
}

/// A base64 payload of media type `mime`, masked: text (and JSON, HTML, XML) decoded, masked
/// as a body of its type, and encoded again; anything else, which the masker cannot read (an
/// image, audio, a PDF), emptied and counted `UNREADABLE`, as such a body is refused.
fn mask_payload(profile: &Profile, encoded: &str, mime: &str, tally: &Tally) -> String {
    use super::body::BodyKind;
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let kind = if mime.is_empty() { BodyKind::Opaque } else { BodyKind::of(Some(mime)) };
    let decoded = b64.decode(encoded.trim()).ok().filter(|d| std::str::from_utf8(d).is_ok());
    let masked = match (kind, decoded) {
        (BodyKind::Json, Some(d)) => mask_document(profile, &d, tally).ok(),
        (BodyKind::Text, Some(d)) => Some(profile.mask_text(&d, tally)),
        (BodyKind::Html | BodyKind::Xml, Some(d)) => {
            Some(profile.mask_markup_keyed("", &d, kind == BodyKind::Html, tally))
        }
        _ => None,
    };
    match masked {
        Some(m) => b64.encode(m),
        None => {
            tally.add("UNREADABLE", 1);
            String::new()
        }
    }
}

/// A string value at `path`: its key, if it has one, is context (`"mrn": "028939"`).
fn mask_string(profile: &Profile, path: &[PathSeg], s: &str, tally: &Tally) -> String {
    match PathSeg::own_key(path) {
        Some(k) => super::into_string(profile.mask_keyed(k, s.as_bytes(), tally)),
        None => profile.mask_str(s, tally),
    }
}

/// A number at `path`, as text: the nearest key above it is context (`"ssn": 219099999`, or
/// `"phones": [6175550123]`).
fn mask_number(profile: &Profile, path: &[PathSeg], text: &[u8], tally: &Tally) -> Vec<u8> {
    number_under(profile, PathSeg::nearest_key(path), text, tally)
}

/// [`mask_number`] for a number whose nearest key above it is `key`.
fn number_under(profile: &Profile, key: Option<&str>, text: &[u8], tally: &Tally) -> Vec<u8> {
    match key {
        Some(k) => profile.mask_keyed(k, text, tally),
        None => profile.mask_text(text, tally),
    }
}

/// A key whose value may be a side channel (see [`side_channel`]).
fn side_channel_key(key: &str) -> bool {
    matches!(key, "logprobs" | "top_logprobs" | "context")
}

fn side_channel(key: &str, v: &Value) -> bool {
    match key {
        "logprobs" | "top_logprobs" => !v.is_null(),
        "context" => v.as_array().is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_number)),
        _ => false,
    }
}

fn get_path<'v>(v: &'v Value, path: &[PathSeg]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, seg| match seg {
        PathSeg::Key(k) => v.get(k),
        PathSeg::Index(Some(i)) => v.get(i),
        PathSeg::Index(None) => None,
    })
}

/// Sets `path` in `v` to `s`, creating objects on the way where a key is missing.
fn set_path(v: &mut Value, path: &[PathSeg], s: String) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut cur = v;
    for seg in parents {
        cur = match seg {
            PathSeg::Key(k) => {
                let Value::Object(m) = cur else { return };
                m.entry(k.clone()).or_insert_with(|| Value::Object(Default::default()))
            }
            PathSeg::Index(Some(i)) => match cur.get_mut(i) {
                Some(c) => c,
                None => return,
            },
            PathSeg::Index(None) => return,
        };
    }
    if let (PathSeg::Key(k), Value::Object(m)) = (last, cur) {
        m.insert(k.clone(), Value::String(s));
    }
}

fn key(k: &str) -> PathSeg {
    PathSeg::Key(k.to_owned())
}

/// One streamed text field.
#[derive(Debug)]
struct Delta {
    stream: TextStream,
    /// An event shaped like the last one that carried the field, every streamed field emptied.
    template: Value,
    path: Vec<PathSeg>,
}

/// Masks the JSON events of one streamed response.
#[derive(Debug)]
pub struct EventMasker {
    profile: Arc<Profile>,
    tally: Arc<Tally>,
    deltas: BTreeMap<String, Delta>,
    /// Streamed fields the route names beyond the known shapes (`[*]`: any element).
    fields: Arc<[Vec<PathSeg>]>,
}

/// A streamed text field found in an event: its stream key and path.
type Site = (String, Vec<PathSeg>);

impl EventMasker {
    /// A masker for one response.
    pub fn new(profile: Arc<Profile>, tally: Arc<Tally>) -> Self {
        Self::with_fields(profile, tally, Arc::from(Vec::new()))
    }

    /// A masker that also streams the string fields at `fields` (a route's `stream_fields`).
    pub fn with_fields(profile: Arc<Profile>, tally: Arc<Tally>, fields: Arc<[Vec<PathSeg>]>) -> Self {
        Self { profile, tally, deltas: BTreeMap::new(), fields }
    }

    /// Masks one event. Returns the events to send in its place, in order (extra delta events
    /// carrying released text may come first). An event that would open more than
    /// [`super::MAX_STREAMS`] streams is refused: its pieces cannot be judged joined.
    pub fn event(&mut self, mut v: Value) -> Result<Vec<Value>, super::MaskError> {
        let (mut sites, ends, ends_before) = shape(&v);
        for pattern in self.fields.iter() {
            let mut found = Vec::new();
            expand(&v, pattern, &mut Vec::new(), &mut found);
            for path in found {
                if !sites.iter().any(|(_, p)| *p == path) {
                    sites.push((format!("field/{path:?}"), path));
                }
            }
        }
        let mut out = Vec::new();
        for prefix in &ends_before {
            out.extend(self.flush_prefix(prefix));
        }
        let mut streamed = Vec::new();
        for (k, path) in &sites {
            if self.profile.json_rule(path).is_some() {
                continue; // a field rule on a streamed field applies per event
            }
            let Some(Value::String(text)) = get_path(&v, path) else { continue };
            let text = text.clone();
            if !self.deltas.contains_key(k) && self.deltas.len() >= super::MAX_STREAMS {
                return Err(super::MaskError::TooManyStreams(super::MAX_STREAMS));
            }
            let delta = self.deltas.entry(k.clone()).or_insert_with(|| Delta {
                stream: self.profile.stream(self.tally.clone()),
                template: Value::Null,
                path: path.clone(),
            });
            delta.path = path.clone();
            let masked = delta.stream.push(text.as_bytes());
            set_path(&mut v, path, super::into_string(masked));
            streamed.push(path.clone());
        }
        walk(&self.profile, &mut v, &mut Vec::new(), &streamed, &self.tally, &mut CleanKeys::default());
        // Templates: this event with every streamed field emptied.
        let mut template = v.clone();
        for p in &streamed {
            set_path(&mut template, p, String::new());
        }
        for (k, path) in &sites {
            if let Some(d) = self.deltas.get_mut(k)
                && streamed.contains(path)
            {
                d.template = template.clone();
            }
        }
        // Pieces that end with this event release what they held into it.
        for prefix in &ends {
            let keys: Vec<String> = self.deltas.keys().filter(|k| k.starts_with(prefix.as_str())).cloned().collect();
            for k in keys {
                let Some(mut d) = self.deltas.remove(&k) else { continue };
                let rest = d.stream.finish();
                if rest.is_empty() {
                    continue;
                }
                let current = match get_path(&v, &d.path) {
                    Some(Value::String(s)) => s.clone(),
                    _ => String::new(),
                };
                set_path(&mut v, &d.path, current + &String::from_utf8_lossy(&rest));
            }
        }
        out.push(v);
        Ok(out)
    }

    /// The profile it masks with.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Where its counts go.
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// End of the stream (`[DONE]` or the body's end): extra events carrying what is held back.
    pub fn finish(&mut self) -> Vec<Value> {
        self.flush_prefix("")
    }

    fn flush_prefix(&mut self, prefix: &str) -> Vec<Value> {
        let keys: Vec<String> = self.deltas.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
        let mut out = Vec::new();
        for k in keys {
            let Some(mut d) = self.deltas.remove(&k) else { continue };
            let rest = d.stream.finish();
            if rest.is_empty() || d.template.is_null() {
                continue;
            }
            let mut ev = d.template;
            set_path(&mut ev, &d.path, super::into_string(rest));
            out.push(ev);
        }
        out
    }
}

/// The streamed fields of an event, the stream-key prefixes whose pieces end with it, and the
/// prefixes whose pieces end just before it.
fn shape(v: &Value) -> (Vec<Site>, Vec<String>, Vec<String>) {
    let mut sites = Vec::new();
    let mut ends = Vec::new();
    let mut ends_before = Vec::new();
    // OpenAI chat completions and completions.
    if let Some(choices) = v.get("choices").and_then(Value::as_array) {
        for (i, c) in choices.iter().enumerate() {
            let n = c.get("index").and_then(Value::as_u64).unwrap_or(i as u64);
            let base = vec![key("choices"), PathSeg::Index(Some(i))];
            for field in [
                &["delta", "content"][..],
                &["delta", "reasoning_content"],
                &["delta", "reasoning"],
                &["delta", "refusal"],
                &["delta", "audio", "transcript"],
                &["delta", "function_call", "arguments"],
                &["text"],
            ] {
                let mut p = base.clone();
                p.extend(field.iter().map(|f| key(f)));
                if get_path(v, &p).is_some_and(Value::is_string) {
                    sites.push((format!("choices/{n}/{}", field.join(".")), p));
                }
            }
            if let Some(calls) = c.get("delta").and_then(|d| d.get("tool_calls")).and_then(Value::as_array) {
                for (j, call) in calls.iter().enumerate() {
                    let t = call.get("index").and_then(Value::as_u64).unwrap_or(j as u64);
                    let mut p = base.clone();
                    p.extend([
                        key("delta"),
                        key("tool_calls"),
                        PathSeg::Index(Some(j)),
                        key("function"),
                        key("arguments"),
                    ]);
                    if get_path(v, &p).is_some_and(Value::is_string) {
                        sites.push((format!("choices/{n}/tool/{t}"), p));
                    }
                }
            }
            if c.get("finish_reason").is_some_and(|f| !f.is_null()) {
                ends.push(format!("choices/{n}/"));
            }
        }
    }
    match v.get("type").and_then(Value::as_str) {
        // Anthropic messages.
        Some("content_block_delta") => {
            let n = v.get("index").and_then(Value::as_u64).unwrap_or(0);
            for f in ["text", "partial_json", "thinking"] {
                let p = vec![key("delta"), key(f)];
                if get_path(v, &p).is_some_and(Value::is_string) {
                    sites.push((format!("block/{n}/{f}"), p));
                }
            }
        }
        Some("content_block_stop") => {
            let n = v.get("index").and_then(Value::as_u64).unwrap_or(0);
            ends_before.push(format!("block/{n}/"));
        }
        // OpenAI Responses API.
        Some(t)
            if t.starts_with("response.") && t.ends_with(".delta") && v.get("delta").is_some_and(Value::is_string) =>
        {
            sites.push((responses_key(v), vec![key("delta")]));
        }
        Some(t) if t.starts_with("response.") && t.ends_with(".done") => ends_before.push(responses_key(v)),
        _ => {}
    }
    // Gemini: candidates, each with parts of text.
    if let Some(candidates) = v.get("candidates").and_then(Value::as_array) {
        for (i, c) in candidates.iter().enumerate() {
            let n = c.get("index").and_then(Value::as_u64).unwrap_or(i as u64);
            let parts = c.get("content").and_then(|c| c.get("parts")).and_then(Value::as_array);
            for (j, part) in parts.into_iter().flatten().enumerate() {
                if part.get("text").is_some_and(Value::is_string) {
                    let p = vec![
                        key("candidates"),
                        PathSeg::Index(Some(i)),
                        key("content"),
                        key("parts"),
                        PathSeg::Index(Some(j)),
                        key("text"),
                    ];
                    sites.push((format!("gemini/{n}/{j}"), p));
                }
            }
            if c.get("finishReason").is_some_and(|f| !f.is_null()) {
                ends.push(format!("gemini/{n}/"));
            }
        }
    }
    // Hugging Face TGI (`token.text`) and llama.cpp's own `/completion` (`content`).
    if v.get("token").and_then(|t| t.get("text")).is_some_and(Value::is_string) {
        sites.push(("tgi/".into(), vec![key("token"), key("text")]));
    }
    if v.get("generated_text").is_some_and(|g| !g.is_null()) {
        ends.push("tgi/".into());
    }
    if v.get("content").is_some_and(Value::is_string) && v.get("stop").is_some_and(Value::is_boolean) {
        sites.push(("llamacpp/".into(), vec![key("content")]));
        if v.get("stop").and_then(Value::as_bool) == Some(true) {
            ends.push("llamacpp/".into());
        }
    }
    // Ollama generate and chat.
    for field in [&["response"][..], &["thinking"], &["message", "content"], &["message", "thinking"]] {
        let p: Vec<PathSeg> = field.iter().map(|f| key(f)).collect();
        if get_path(v, &p).is_some_and(Value::is_string) {
            sites.push((format!("ollama/{}", field.join(".")), p));
        }
    }
    if v.get("done").and_then(Value::as_bool) == Some(true) {
        ends.push("ollama/".into());
    }
    (sites, ends, ends_before)
}

/// The string fields of `v` that `pattern` names (`[*]` expanded to each element), as paths.
fn expand(v: &Value, pattern: &[PathSeg], at: &mut Vec<PathSeg>, out: &mut Vec<Vec<PathSeg>>) {
    let Some((first, rest)) = pattern.split_first() else {
        if v.is_string() {
            out.push(at.clone());
        }
        return;
    };
    match first {
        PathSeg::Key(k) => {
            if let Some(next) = v.get(k) {
                at.push(first.clone());
                expand(next, rest, at, out);
                at.pop();
            }
        }
        PathSeg::Index(Some(i)) => {
            if let Some(next) = v.get(*i) {
                at.push(first.clone());
                expand(next, rest, at, out);
                at.pop();
            }
        }
        PathSeg::Index(None) => {
            for (i, next) in v.as_array().into_iter().flatten().enumerate() {
                at.push(PathSeg::Index(Some(i)));
                expand(next, rest, at, out);
                at.pop();
            }
        }
    }
}

fn responses_key(v: &Value) -> String {
    let item = v.get("item_id").and_then(Value::as_str).unwrap_or("");
    let part = v.get("content_index").and_then(Value::as_u64).unwrap_or(0);
    format!("resp/{item}/{part}")
}

#[cfg(test)]
mod tests;
