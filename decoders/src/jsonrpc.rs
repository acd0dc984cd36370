//! JSON-RPC 2.0 messages (the JSON-RPC 2.0 Specification), as MCP carries them over streamable
//! HTTP, with the MCP `tools/call` request (MCP specification, "Tools") picked out for policy.
//!
//! A body is one message or a batch (an array of messages, §6). The whole body is bounded before
//! it is parsed, batches are bounded in length, and serde_json bounds nesting depth, so a hostile
//! body cannot steer memory or recursion.

use serde_json::{Map, Value};

use crate::DecodeError;

/// Default bound on a body.
pub const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;
/// Most messages in one batch.
pub const MAX_BATCH: usize = 1024;

/// A request or notification id (§4: a string, a number, or null).
#[derive(Debug, Clone, PartialEq)]
pub enum Id {
    /// A string id.
    Str(String),
    /// A numeric id.
    Num(serde_json::Number),
    /// `null` (discouraged by the spec, but valid in responses to unparseable requests).
    Null,
}

/// One JSON-RPC 2.0 message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A call that expects a response (§4).
    Request {
        /// Its id.
        id: Id,
        /// Method name.
        method: String,
        /// Parameters (an object or an array), if any.
        params: Option<Value>,
    },
    /// A call without an id (§4.1): no response.
    Notification {
        /// Method name.
        method: String,
        /// Parameters, if any.
        params: Option<Value>,
    },
    /// A successful response (§5).
    Result {
        /// The request's id.
        id: Id,
        /// The result.
        result: Value,
    },
    /// An error response (§5.1).
    Error {
        /// The request's id.
        id: Id,
        /// Error code.
        code: i64,
        /// Error message.
        message: String,
    },
}

/// A body: one message or a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// One message.
    Single(Message),
    /// A batch (§6), never empty.
    Batch(Vec<Message>),
}

impl Body {
    /// The messages, one or many.
    pub fn messages(&self) -> &[Message] {
        match self {
            Self::Single(m) => std::slice::from_ref(m),
            Self::Batch(v) => v,
        }
    }
}

/// An MCP `tools/call`: the tool and its arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// Tool name.
    pub name: String,
    /// Arguments (an object), empty when absent.
    pub arguments: Map<String, Value>,
}

fn malformed(reason: &'static str) -> DecodeError {
    DecodeError::Malformed { what: "JSON-RPC message", reason }
}

fn id_of(v: &Value) -> Result<Id, DecodeError> {
    match v {
        Value::String(s) => Ok(Id::Str(s.clone())),
        Value::Number(n) => Ok(Id::Num(n.clone())),
        Value::Null => Ok(Id::Null),
        _ => Err(malformed("id must be a string, a number or null")),
    }
}

/// Refuses a key that differs from one of `names` only in case: a server whose JSON reader
/// matches keys without case (Go's `encoding/json`) would read `"Method"` as the method the
/// gateway did not decide.
fn no_case_twins(o: &Map<String, Value>, names: &[&str]) -> Result<(), DecodeError> {
    for k in o.keys() {
        // Not only ASCII case: Go folds `ſ` to `s` and `K` (Kelvin) to `k` too.
        if !k.is_ascii() || names.iter().any(|n| k != n && k.eq_ignore_ascii_case(n)) {
            return Err(malformed("a key differs from a JSON-RPC member only in case, which servers read differently"));
        }
    }
    Ok(())
}

fn message(v: Value) -> Result<Message, DecodeError> {
    let Value::Object(mut o) = v else { return Err(malformed("a message is a JSON object")) };
    no_case_twins(&o, &["jsonrpc", "method", "params", "id", "result", "error"])?;
    if o.get("jsonrpc") != Some(&Value::String("2.0".into())) {
        return Err(malformed("`jsonrpc` must be exactly \"2.0\""));
    }
    if let Some(method) = o.remove("method") {
        let Value::String(method) = method else { return Err(malformed("`method` must be a string")) };
        let params = o.remove("params");
        if params.as_ref().is_some_and(|p| !p.is_object() && !p.is_array()) {
            return Err(malformed("`params` must be an object or an array"));
        }
        return Ok(match o.get("id") {
            None => Message::Notification { method, params },
            Some(id) => Message::Request { id: id_of(id)?, method, params },
        });
    }
    let id = id_of(o.get("id").ok_or_else(|| malformed("a response needs an `id`"))?)?;
    match (o.remove("result"), o.remove("error")) {
        (Some(result), None) => Ok(Message::Result { id, result }),
        (None, Some(Value::Object(e))) => {
            let code =
                e.get("code").and_then(Value::as_i64).ok_or_else(|| malformed("error `code` must be an integer"))?;
            let message = e
                .get("message")
                .and_then(Value::as_str)
                .ok_or_else(|| malformed("error `message` must be a string"))?;
            Ok(Message::Error { id, code, message: message.to_owned() })
        }
        (None, Some(_)) => Err(malformed("`error` must be an object")),
        _ => Err(malformed("a response has exactly one of `result` and `error`")),
    }
}

/// Any JSON text in which no object has a key twice (keys compared as decoded).
struct Unique;

impl<'de> serde::Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = Unique;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_unit<E>(self) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
        while seq.next_element::<Unique>()?.is_some() {}
        Ok(Unique)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key) {
                return Err(serde::de::Error::custom("a key appears twice"));
            }
            map.next_value::<Unique>()?;
        }
        Ok(Unique)
    }
}

/// Parses a body of at most `max` bytes.
pub fn parse(body: &[u8], max: usize) -> Result<Body, DecodeError> {
    if body.len() > max {
        return Err(DecodeError::TooLong { what: "JSON-RPC body", len: body.len(), max });
    }
    // A key that appears twice: this reader keeps the last, some servers the first, so the
    // method or tool decided could differ from the one run.
    serde_json::from_slice::<Unique>(body).map_err(|e| {
        if e.is_data() {
            malformed("a key appears twice in one object, which servers read differently")
        } else {
            malformed("not valid JSON")
        }
    })?;
    let v: Value = serde_json::from_slice(body).map_err(|_| malformed("not valid JSON"))?;
    match v {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(malformed("an empty batch is invalid"));
            }
            if items.len() > MAX_BATCH {
                return Err(DecodeError::TooLong { what: "JSON-RPC batch", len: items.len(), max: MAX_BATCH });
            }
            items.into_iter().map(message).collect::<Result<_, _>>().map(Body::Batch)
        }
        other => message(other).map(Body::Single),
    }
}

/// The MCP tool call a message makes, if it is a `tools/call` request. A `tools/call` whose
/// `params` lack a string `name` is an error: policy must never see a tool call it cannot name.
pub fn tool_call(m: &Message) -> Result<Option<ToolCall>, DecodeError> {
    let (Message::Request { method, params, .. } | Message::Notification { method, params }) = m else {
        return Ok(None);
    };
    if method != "tools/call" {
        return Ok(None);
    }
    let params =
        params.as_ref().and_then(Value::as_object).ok_or_else(|| malformed("tools/call needs object params"))?;
    no_case_twins(params, &["name", "arguments"])?;
    let name =
        params.get("name").and_then(Value::as_str).ok_or_else(|| malformed("tools/call needs a string `name`"))?;
    let arguments = match params.get("arguments") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(a)) => a.clone(),
        Some(_) => return Err(malformed("tools/call `arguments` must be an object")),
    };
    Ok(Some(ToolCall { name: name.to_owned(), arguments }))
}

/// Fuzz entry point: arbitrary bytes as a body; whatever parses must yield tool calls without
/// panicking.
pub fn fuzz_body(data: &[u8]) {
    if let Ok(body) = parse(data, 64 * 1024) {
        for m in body.messages() {
            let _ = tool_call(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn an_mcp_session_parses() {
        let init = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}"#;
        let Body::Single(Message::Request { id, method, .. }) = parse(init, DEFAULT_MAX_BODY).unwrap() else {
            panic!("not a request")
        };
        assert_eq!((id, method.as_str()), (Id::Num(0.into()), "initialize"));
        let note = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        assert!(matches!(parse(note, DEFAULT_MAX_BODY).unwrap(), Body::Single(Message::Notification { .. })));
        let call = br#"{"jsonrpc":"2.0","id":"c-1","method":"tools/call","params":{"name":"lookup_patient","arguments":{"mrn":"12345"}}}"#;
        let body = parse(call, DEFAULT_MAX_BODY).unwrap();
        let tc = tool_call(&body.messages()[0]).unwrap().unwrap();
        assert_eq!(tc.name, "lookup_patient");
        assert_eq!(tc.arguments["mrn"], "12345");
        let result = br#"{"jsonrpc":"2.0","id":"c-1","result":{"content":[{"type":"text","text":"ok"}]}}"#;
        assert!(matches!(parse(result, DEFAULT_MAX_BODY).unwrap(), Body::Single(Message::Result { .. })));
        let err = br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#;
        assert_eq!(
            parse(err, DEFAULT_MAX_BODY).unwrap(),
            Body::Single(Message::Error { id: Id::Null, code: -32700, message: "Parse error".into() })
        );
    }

    #[test]
    fn batches_carry_every_tool_call() {
        let batch = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},
            {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"a"}},
            {"jsonrpc":"2.0","method":"tools/call","params":{"name":"b","arguments":{}}}]"#;
        let body = parse(batch, DEFAULT_MAX_BODY).unwrap();
        let names: Vec<String> = body.messages().iter().filter_map(|m| tool_call(m).unwrap()).map(|t| t.name).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn invalid_messages_are_refused() {
        for bad in [
            &br#"{"jsonrpc":"1.0","id":1,"method":"x"}"#[..],
            br#"{"id":1,"method":"x"}"#,
            br#"{"jsonrpc":"2.0","id":{},"method":"x"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":7}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"x","params":"s"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","Method":"tools/call"}"#,
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"param\u{17f}\":{}}".as_bytes(),
            br#"{"jsonrpc":"2.0","id":1}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":1,"error":{"code":1,"message":"m"}}"#,
            br#"[]"#,
            br#"not json"#,
            br#"[1]"#,
            // A key twice: servers that keep the first would run what was not decided.
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"},"method":"tools/list"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete","name":"read"}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"q":1,"\u0071":2}}}"#,
        ] {
            assert!(parse(bad, DEFAULT_MAX_BODY).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let nameless = parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#, 1024).unwrap();
        assert!(tool_call(&nameless.messages()[0]).is_err(), "a tools/call policy cannot name is refused");
        let twin = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"safe","NAME":"delete_x"}}"#;
        assert!(tool_call(&parse(twin, 1024).unwrap().messages()[0]).is_err(), "a name a server could read otherwise");
        assert!(matches!(parse(&[b' '; 100], 10), Err(DecodeError::TooLong { .. })));
        let deep = "[".repeat(10_000);
        assert!(parse(deep.as_bytes(), DEFAULT_MAX_BODY).is_err(), "nesting is bounded");
    }

    #[test]
    fn fuzz_seed_corpus_never_panics() {
        crate::testutil::seed_corpus("jsonrpc_body", 2, fuzz_body);
    }

    proptest! {
        #[test]
        fn tool_calls_round_trip(name in "[a-z_]{1,16}", key in "[a-z]{1,8}", val in any::<i32>(), id in any::<u32>()) {
            let body = serde_json::json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":name,"arguments":{key.clone():val}}});
            let parsed = parse(body.to_string().as_bytes(), DEFAULT_MAX_BODY).unwrap();
            let tc = tool_call(&parsed.messages()[0]).unwrap().unwrap();
            prop_assert_eq!(tc.name, name);
            prop_assert_eq!(tc.arguments[&key].as_i64(), Some(i64::from(val)));
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            fuzz_body(&data);
        }
    }
}
