//! gRPC response messages, decoded with the service's descriptors (prost-reflect).
//!
//! The method's output type comes from a configured `FileDescriptorSet`; each message is decoded
//! (inflated first if the upstream compressed it), every string field is masked — by a proto
//! field rule (`pkg.Message.field` or a bare field name), else by the detectors with the field
//! name as context — nested messages, repeated fields and map values included, and the message is
//! re-encoded (uncompressed). Fields named in `grpc_delta_fields` carry text in pieces across the
//! messages of a stream (a token-streaming model API): each is one [`TextStream`], so a value cut
//! between two messages is still found; what it holds back at the end of the stream goes out in
//! one more message shaped like the last. A message that does not decode is not delivered.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage as _, Value,
};

use super::{Action, FieldSelector, MaskError, Profile, Tally, TextStream};

/// The gRPC schema a masked route decodes with.
#[derive(Debug)]
pub struct Schema {
    pool: DescriptorPool,
    /// Full names of string fields that are deltas of a streamed text.
    deltas: Vec<String>,
}

impl Schema {
    /// A schema from an encoded `FileDescriptorSet` (`protoc --include_imports
    /// --descriptor_set_out`).
    pub fn new(descriptor_set: &[u8], deltas: Vec<String>) -> Result<Self, String> {
        let pool = DescriptorPool::decode(descriptor_set).map_err(|e| format!("not a FileDescriptorSet: {e}"))?;
        for d in &deltas {
            let (msg, field) = d.rsplit_once('.').ok_or_else(|| format!("`{d}` is not pkg.Message.field"))?;
            let m = pool.get_message_by_name(msg).ok_or_else(|| format!("no message {msg} in the descriptor set"))?;
            let f = m.get_field_by_name(field).ok_or_else(|| format!("{msg} has no field {field}"))?;
            if f.kind() != Kind::String || f.is_list() || f.is_map() {
                return Err(format!("`{d}` is not a singular string field"));
            }
        }
        Ok(Self { pool, deltas })
    }

    /// The output message type of the method at `path` (`/pkg.Service/Method`), and whether the
    /// server streams it.
    fn output(&self, path: &str) -> Option<(MessageDescriptor, bool)> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        let s = self.pool.get_service_by_name(service)?;
        let m = s.methods().find(|m| m.name() == method)?;
        Some((m.output(), m.is_server_streaming()))
    }
}

/// Masks the response messages of one call.
#[derive(Debug)]
pub struct GrpcMasker {
    profile: Arc<Profile>,
    tally: Arc<Tally>,
    schema: Arc<Schema>,
    output: MessageDescriptor,
    /// Server streaming: delta fields are streams (a single response is masked whole).
    streaming: bool,
    encoding: Option<String>,
    max: usize,
    streams: BTreeMap<String, TextStream>,
    /// The last message, streamed fields emptied: the shape of the message that carries what the
    /// streams hold at the end.
    template: Option<DynamicMessage>,
}

impl GrpcMasker {
    /// The masker for a call to `path`; `encoding` is the response's `grpc-encoding`.
    pub fn new(
        profile: Arc<Profile>,
        tally: Arc<Tally>,
        schema: Arc<Schema>,
        path: &str,
        encoding: Option<String>,
        max: usize,
    ) -> Result<Self, MaskError> {
        let (output, streaming) = schema
            .output(path)
            .ok_or(MaskError::Uninspectable("the gRPC method is not in the route's descriptor set"))?;
        Ok(Self { profile, tally, schema, output, streaming, encoding, max, streams: BTreeMap::new(), template: None })
    }

    /// Masks one length-prefixed message.
    pub fn unit(&mut self, unit: Bytes) -> Result<Vec<Bytes>, MaskError> {
        let [flag, a, b, c, d, ..] = unit[..] else {
            return Err(MaskError::Uninspectable("a truncated gRPC message"));
        };
        let len = u32::from_be_bytes([a, b, c, d]) as usize;
        if unit.len() != 5 + len {
            return Err(MaskError::Uninspectable("a truncated gRPC message"));
        }
        let frame = airlock_decoders::grpc::GrpcMessage { compressed: flag & 1 == 1, message: unit.slice(5..) };
        let payload = airlock_decoders::grpc::decompress(&frame, self.encoding.as_deref(), self.max)
            .map_err(|_| MaskError::Uninspectable("a gRPC message that does not inflate"))?;
        let mut msg = DynamicMessage::decode(self.output.clone(), payload)
            .map_err(|_| MaskError::Uninspectable("a gRPC message that does not match its descriptor"))?;
        let mut streamed = Vec::new();
        self.walk(&mut msg, true, &mut streamed);
        let mut template = msg.clone();
        for f in &streamed {
            template.set_field(f, Value::String(String::new()));
        }
        if !streamed.is_empty() {
            self.template = Some(template);
        }
        Ok(vec![frame_of(&msg)])
    }

    /// The end of the stream: one more message with what the streamed fields held back.
    pub fn finish(&mut self) -> Result<Vec<Bytes>, MaskError> {
        let Some(mut msg) = self.template.take() else { return Ok(Vec::new()) };
        let mut any = false;
        for (name, mut stream) in std::mem::take(&mut self.streams) {
            let rest = stream.finish();
            if rest.is_empty() {
                continue;
            }
            if let Some(f) = msg.descriptor().get_field_by_name(name.rsplit('.').next().unwrap_or("")) {
                msg.set_field(&f, Value::String(super::into_string(rest)));
                any = true;
            }
        }
        Ok(if any { vec![frame_of(&msg)] } else { Vec::new() })
    }

    fn rule(&self, f: &FieldDescriptor) -> Option<&super::FieldRule> {
        self.profile
            .fields
            .iter()
            .find(|r| matches!(&r.selector, FieldSelector::Proto(p) if p == f.full_name() || p == f.name()))
    }

    fn walk(&mut self, msg: &mut DynamicMessage, top: bool, streamed: &mut Vec<FieldDescriptor>) {
        // Fields the schema does not name (an upstream built from a newer .proto) cannot be read
        // by type, but re-encoding would pass them on: they go, counted as unreadable.
        let unknown = msg.take_unknown_fields().count();
        if unknown > 0 {
            self.tally.add("UNREADABLE", unknown as u64);
        }
        for (ext, value) in msg.extensions_mut() {
            let name = ext.name().to_owned();
            self.value(&name, value);
        }
        let fields: Vec<FieldDescriptor> = msg.descriptor().fields().filter(|f| msg.has_field(f)).collect();
        for f in fields {
            if let Some(rule) = self.rule(&f).cloned() {
                let replaced = match (rule.action, msg.get_field_mut(&f)) {
                    (Action::Keep, _) => true,
                    (Action::Redact | Action::Partial(_) | Action::Pseudonymize, Value::String(s)) => {
                        *s = String::from_utf8_lossy(&self.profile.field_text(&rule, s.as_bytes(), &self.tally))
                            .into_owned();
                        true
                    }
                    _ => false,
                };
                // Drop, null, or a value that cannot hold a replacement string: cleared.
                if !replaced {
                    self.tally.add(&rule.label, 1);
                    msg.clear_field(&f);
                }
                continue;
            }
            if top && self.streaming && self.schema.deltas.iter().any(|d| d == f.full_name()) {
                if let Value::String(s) = msg.get_field_mut(&f) {
                    let stream = self
                        .streams
                        .entry(f.full_name().to_owned())
                        .or_insert_with(|| self.profile.stream(self.tally.clone()));
                    *s = super::into_string(stream.push(s.as_bytes()));
                    streamed.push(f.clone());
                }
                continue;
            }
            let name = f.name().to_owned();
            let value = msg.get_field_mut(&f);
            self.value(&name, value);
        }
    }

    fn value(&mut self, name: &str, v: &mut Value) {
        match v {
            Value::String(s) => {
                let masked = self.profile.mask_keyed(name, s.as_bytes(), &self.tally);
                if masked != s.as_bytes() {
                    *s = super::into_string(masked);
                }
            }
            // Bytes are scanned as they are (text, or text inside a binary framing such as a
            // packed `Any`): what is found is replaced, even where that breaks the framing.
            Value::Bytes(b) => {
                let masked = self.profile.mask_keyed(name, b, &self.tally);
                if masked != b[..] {
                    *b = Bytes::from(masked);
                }
            }
            // An integer is read as its decimal text, the field name its context (`int64 ssn`,
            // `uint64 phone`), as a JSON number is: a finding makes it zero (the default, which
            // proto3 does not send).
            Value::I32(_) | Value::I64(_) | Value::U32(_) | Value::U64(_) => {
                let text = match v {
                    Value::I32(n) => n.to_string(),
                    Value::I64(n) => n.to_string(),
                    Value::U32(n) => n.to_string(),
                    Value::U64(n) => n.to_string(),
                    _ => unreachable!("matched above"),
                };
                if self.profile.mask_keyed(name, text.as_bytes(), &self.tally) != text.as_bytes() {
                    *v = match v {
                        Value::I32(_) => Value::I32(0),
                        Value::I64(_) => Value::I64(0),
                        Value::U32(_) => Value::U32(0),
                        _ => Value::U64(0),
                    };
                }
            }
            Value::Message(m) => self.walk(m, false, &mut Vec::new()),
            Value::List(items) => items.iter_mut().for_each(|i| self.value(name, i)),
            Value::Map(map) => {
                // A string key is text too (`map<string, Visit>` keyed by patient name).
                let entries: Vec<(prost_reflect::MapKey, Value)> = std::mem::take(map).into_iter().collect();
                for (k, mut item) in entries {
                    let k = match k {
                        prost_reflect::MapKey::String(s) => {
                            self.value(&s, &mut item);
                            prost_reflect::MapKey::String(self.profile.mask_str(&s, &self.tally))
                        }
                        other => {
                            self.value(name, &mut item);
                            other
                        }
                    };
                    map.insert(k, item);
                }
            }
            _ => {}
        }
    }
}

fn frame_of(msg: &DynamicMessage) -> Bytes {
    let payload = msg.encode_to_vec();
    airlock_decoders::grpc::encode(&airlock_decoders::grpc::GrpcMessage { compressed: false, message: payload.into() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::{Detector, FieldRule, ProfileSpec};
    use prost_reflect::prost_types::{
        DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto,
        ServiceDescriptorProto, field_descriptor_proto::Type,
    };

    /// `t.Note { string text = 1; string mrn = 2; int32 n = 3; repeated t.Note kids = 4; bytes blob = 5;
    /// int64 ssn = 6; repeated uint64 member_id = 7; }` and
    /// `t.Svc/Get(Note) returns (stream Note)`, built in code (no protoc here).
    fn descriptor_set() -> Vec<u8> {
        let field = |name: &str, number: i32, ty: Type, label: i32, type_name: Option<&str>| FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            r#type: Some(ty as i32),
            label: Some(label),
            type_name: type_name.map(str::to_owned),
            ..Default::default()
        };
        let note = DescriptorProto {
            name: Some("Note".into()),
            field: vec![
                field("text", 1, Type::String, 1, None),
                field("mrn", 2, Type::String, 1, None),
                field("n", 3, Type::Int32, 1, None),
                field("kids", 4, Type::Message, 3, Some(".t.Note")),
                field("blob", 5, Type::Bytes, 1, None),
                field("ssn", 6, Type::Int64, 1, None),
                field("member_id", 7, Type::Uint64, 3, None),
            ],
            ..Default::default()
        };
        let svc = ServiceDescriptorProto {
            name: Some("Svc".into()),
            method: vec![MethodDescriptorProto {
                name: Some("Get".into()),
                input_type: Some(".t.Note".into()),
                output_type: Some(".t.Note".into()),
                server_streaming: Some(true),
                ..Default::default()
            }],
            ..Default::default()
        };
        let file = FileDescriptorProto {
            name: Some("t.proto".into()),
            package: Some("t".into()),
            message_type: vec![note],
            service: vec![svc],
            syntax: Some("proto3".into()),
            ..Default::default()
        };
        FileDescriptorSet { file: vec![file] }.encode_to_vec()
    }

    fn masker(deltas: Vec<String>, fields: Vec<FieldRule>) -> (GrpcMasker, MessageDescriptor) {
        let schema = Arc::new(Schema::new(&descriptor_set(), deltas).unwrap());
        let det = Arc::new(Detector::new(&[], &[]).unwrap());
        let spec = ProfileSpec { fields, ..ProfileSpec::redact_all("t") };
        let p = Arc::new(Profile::new(det, spec, None).unwrap());
        let desc = schema.pool.get_message_by_name("t.Note").unwrap();
        (GrpcMasker::new(p, Arc::new(Tally::default()), schema, "/t.Svc/Get", None, 1 << 20).unwrap(), desc)
    }

    fn note(desc: &MessageDescriptor, text: &str, mrn: &str, kids: Vec<DynamicMessage>) -> Bytes {
        let mut m = DynamicMessage::new(desc.clone());
        m.set_field_by_name("text", Value::String(text.into()));
        m.set_field_by_name("mrn", Value::String(mrn.into()));
        m.set_field_by_name("n", Value::I32(7));
        m.set_field_by_name("kids", Value::List(kids.into_iter().map(Value::Message).collect()));
        frame_of(&m)
    }

    fn decode(desc: &MessageDescriptor, frame: &Bytes) -> DynamicMessage {
        DynamicMessage::decode(desc.clone(), &frame[5..]).unwrap()
    }

    fn text(m: &DynamicMessage, f: &str) -> String {
        m.get_field_by_name(f).and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    }

    #[test]
    fn unknown_fields_go_and_bytes_are_scanned() {
        let (mut m, desc) = masker(vec![], vec![]);
        let mut msg = DynamicMessage::new(desc.clone());
        msg.set_field_by_name("text", Value::String("ok".into()));
        msg.set_field_by_name("blob", Value::Bytes(Bytes::from_static(b"\x00\x01mail a.b@example.org\xff")));
        let mut payload = msg.encode_to_vec();
        // Field 9, length-delimited, which the schema does not name (a newer upstream).
        let extra = b"SSN 219-09-9999";
        payload.extend_from_slice(&[0x4a, extra.len() as u8]);
        payload.extend_from_slice(extra);
        let frame = airlock_decoders::grpc::encode(&airlock_decoders::grpc::GrpcMessage {
            compressed: false,
            message: payload.into(),
        });
        let out = m.unit(frame).unwrap();
        let got = decode(&desc, &out[0]);
        assert_eq!(got.unknown_fields().count(), 0, "the unknown field went");
        assert!(!out[0].windows(6).any(|w| w == b"219-09"));
        let blob = got.get_field_by_name("blob").unwrap().as_bytes().unwrap().clone();
        assert!(!blob.windows(11).any(|w| w == b"example.org"), "{blob:?}");
        assert!(blob.starts_with(b"\x00\x01mail ") && blob.ends_with(b"\xff"), "{blob:?}");
        assert_eq!(text(&got, "text"), "ok");
    }

    #[test]
    fn strings_nested_and_keyed_are_masked_and_rules_apply() {
        let rule = FieldRule {
            selector: FieldSelector::Proto("t.Note.mrn".into()),
            action: Action::Null,
            label: "mrn".into(),
        };
        let (mut m, desc) = masker(vec![], vec![rule]);
        let mut kid = DynamicMessage::new(desc.clone());
        kid.set_field_by_name("text", Value::String("mail a.b@example.org".into()));
        let out = m.unit(note(&desc, "SSN 219-09-9999", "MRN-1234567", vec![kid])).unwrap();
        let got = decode(&desc, &out[0]);
        assert_eq!(text(&got, "text"), "SSN [PHI:SSN]");
        assert!(!got.has_field_by_name("mrn"), "the rule cleared it");
        let kids = got.get_field_by_name("kids").unwrap();
        let kid = kids.as_list().unwrap()[0].as_message().unwrap();
        assert_eq!(text(kid, "text"), "mail [PHI:EMAIL]");
        assert_eq!(got.get_field_by_name("n").unwrap().as_i32(), Some(7));
        assert!(m.unit(Bytes::from_static(b"\x00\x00\x00\x00\x09\xff\xff")).is_err(), "a broken message is refused");
    }

    #[test]
    fn integers_are_read_as_numbers_with_their_field_name() {
        let (mut m, desc) = masker(vec![], vec![]);
        let mut msg = DynamicMessage::new(desc.clone());
        msg.set_field_by_name("ssn", Value::I64(219_099_999));
        msg.set_field_by_name("member_id", Value::List(vec![Value::U64(123_456_789)]));
        msg.set_field_by_name("n", Value::I32(219_099_999));
        let out = m.unit(frame_of(&msg)).unwrap();
        let got = decode(&desc, &out[0]);
        assert!(!got.has_field_by_name("ssn"), "the SSN went: {got:?}");
        let phones = got.get_field_by_name("member_id").unwrap().as_list().unwrap().to_vec();
        assert_eq!(phones, [Value::U64(0)], "a list item too");
        assert_eq!(got.get_field_by_name("n").unwrap().as_i32(), Some(219_099_999), "no name, no context");
    }

    #[test]
    fn a_delta_field_holds_a_value_split_across_messages() {
        let (mut m, desc) = masker(vec!["t.Note.text".into()], vec![]);
        let mut all = String::new();
        for piece in ["call 617-55", "5-0123 or", " mail x@exa", "mple.org"] {
            for f in m.unit(note(&desc, piece, "", vec![])).unwrap() {
                all.push_str(&text(&decode(&desc, &f), "text"));
            }
        }
        for f in m.finish().unwrap() {
            all.push_str(&text(&decode(&desc, &f), "text"));
        }
        assert_eq!(all, "call [PHI:PHONE] or mail [PHI:EMAIL]");
    }
}
