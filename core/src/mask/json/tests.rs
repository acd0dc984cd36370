use super::*;
use crate::mask::{Detector, FieldRule, FieldSelector, ProfileSpec};
use serde_json::json;

/// Masks `text` the tree walk's way: parse, walk, serialize.
fn tree(p: &Profile, text: &[u8], tally: &Tally) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(text).unwrap();
    mask_value(p, &mut v, tally);
    serde_json::to_vec(&v).unwrap()
}

fn rule(selector: FieldSelector, action: Action, label: &str) -> FieldRule {
    FieldRule { selector, action, label: label.into() }
}

const STRINGS: &[&str] = &[
    "plain words",
    "call 617-555-0123 today",
    "123-45-6789",
    "jane.doe@example.org",
    "MRN 00123456",
    "028939",
    "Dr. Maria Garcia",
    "line\nbreak \"quoted\" 617-555-0123",
    "caf\u{e9} 4111 1111 1111 1111",
    "",
    "2019-03-04",
];
const KEYS: &[&str] = &[
    "note",
    "mrn",
    "ssn",
    "member_id",
    "name",
    "id",
    "dob",
    "phones",
    "logprobs",
    "context",
    "jane@example.org",
    "k\"q",
];

fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (0..STRINGS.len()).prop_map(|i| json!(STRINGS[i])),
        prop_oneof![Just(2_190_999_999_u64), Just(6_175_550_123), Just(42), Just(4_111_111_111_111_111)]
            .prop_map(|n| json!(n)),
        Just(json!(1.5)),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec((0..KEYS.len(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (KEYS[k].to_owned(), v)).collect())),
        ]
    })
}

proptest::proptest! {
    /// Documents with nothing this path leaves to the tree walk (no side-channel key, no key
    /// that holds PHI, no field rule): it must do them itself, and as the tree walk would.
    #[test]
    fn a_plain_document_is_masked_in_its_text(v in json_value(), pretty in proptest::bool::ANY) {
        let text = if pretty { serde_json::to_vec_pretty(&v).unwrap() } else { serde_json::to_vec(&v).unwrap() };
        let plain = ["\"logprobs\"", "\"context\"", "\"jane@example.org\""]
            .iter()
            .all(|k| !String::from_utf8_lossy(&text).contains(k));
        proptest::prop_assume!(plain);
        let p = profile(vec![]);
        let (t_tree, t_doc) = (Tally::default(), Tally::default());
        let want: Value = serde_json::from_slice(&tree(&p, &text, &t_tree)).unwrap();
        let got = in_place::mask(&p, &text, &t_doc);
        proptest::prop_assert!(got.is_some(), "left to the tree walk: {}", String::from_utf8_lossy(&text));
        let got: Value = serde_json::from_slice(&got.unwrap()).unwrap();
        proptest::prop_assert_eq!(&got, &want);
        proptest::prop_assert_eq!(t_doc.snapshot(), t_tree.snapshot());
    }

    #[test]
    fn a_document_masked_in_its_text_reads_as_the_tree_walk_masks_it(
        v in json_value(),
        pretty in proptest::bool::ANY,
        rules in proptest::bool::ANY,
    ) {
        let fields = if rules {
            vec![
                rule(FieldSelector::Key("dob".into()), Action::Redact, "dob"),
                rule(FieldSelector::Key("name".into()), Action::Null, "name"),
                rule(FieldSelector::Key("id".into()), Action::Keep, "id"),
                rule(FieldSelector::path("$.note").unwrap(), Action::Partial(2), "note"),
                rule(FieldSelector::path("$.phones[*]").unwrap(), Action::Redact, "phone"),
                rule(FieldSelector::Key("member_id".into()), Action::Drop, "member"),
            ]
        } else {
            vec![]
        };
        let p = profile(fields);
        let text = if pretty { serde_json::to_vec_pretty(&v).unwrap() } else { serde_json::to_vec(&v).unwrap() };
        let (t_tree, t_doc) = (Tally::default(), Tally::default());
        let want: Value = serde_json::from_slice(&tree(&p, &text, &t_tree)).unwrap();
        let got = mask_document(&p, &text, &t_doc).unwrap();
        let got: Value = serde_json::from_slice(&got).unwrap();
        proptest::prop_assert_eq!(&got, &want, "{}", String::from_utf8_lossy(&text));
        proptest::prop_assert_eq!(t_doc.snapshot(), t_tree.snapshot());
    }
}

#[test]
fn a_document_with_a_string_that_is_not_utf8_is_refused() {
    let p = profile(vec![]);
    let tally = Tally::default();
    for body in [&b"{\"note\": \"caf\xe9 123-45-6789\"}"[..], b"[\"\xff\", \"ok\"]", b"{\"k\xc3\": 1}"] {
        assert!(mask_document(&p, body, &tally).is_err(), "{body:?}");
    }
    assert!(tally.snapshot().is_empty(), "nothing counted for a refused document");
}

/// The reader checks the grammar itself: whatever it masks must parse, and whatever parses
/// it must mask (or leave to the tree walk).
#[test]
fn a_document_is_masked_if_and_only_if_it_parses() {
    let p = profile(vec![]);
    let bad: &[&[u8]] = &[
        b"",
        b"  ",
        b"{",
        b"[",
        b"]",
        b"}",
        b"{\"a\":1,}",
        b"[1,]",
        b"[,1]",
        b"{,\"a\":1}",
        b"{\"a\" 1}",
        b"{\"a\":1 \"b\":2}",
        b"{\"a\":1,,\"b\":2}",
        b"{\"a\":}",
        b"{\"a\"}",
        b"{1:2}",
        b"{\"a\":1}}",
        b"[1]]",
        b"{]",
        b"[}",
        b"[1 2]",
        b"1 2",
        b"\"a\" \"b\"",
        b"tru",
        b"nulll",
        b"True",
        b"[nul]",
        b"01",
        b"-",
        b"1.",
        b".5",
        b"+1",
        b"1e",
        b"1e+",
        b"NaN",
        b"[Infinity]",
        b"0x10",
        b"[1,2",
        b"{\"a\":[1,2}",
        b"\"abc",
        b"\"a\tb\"",
        b"{\"k\x01\": 1}",
        b"[\"\\x\"]",
        b"[\"\\u12\"]",
        b"\xef\xbb\xbf{}",
        b"{}x",
        b"[1]:",
        b"{\"a\":1}:",
        b"{\"a\"::1}",
        b"[\"a\":1]",
        b"1e400",
        b"[-]",
    ];
    let good: &[&[u8]] = &[
        b"{}",
        b"[]",
        b" [ ] ",
        b"0",
        b"-0.5e-3",
        b"\"\"",
        b"true",
        b"[null,false]",
        b"{\"a\":{\"b\":[]}}",
        b"{\"a\":1,\"a\":2}",
        b"\n{\"note\" : \"x\\ty\\u00e9\" }\r\n",
        b"[1E5, 2e+1, -3]",
    ];
    for body in bad.iter().chain(good) {
        let parses = serde_json::from_slice::<Value>(body).is_ok();
        assert_eq!(parses, good.contains(body), "the list is wrong about {}", String::from_utf8_lossy(body));
        let tally = Tally::default();
        assert_eq!(mask_document(&p, body, &tally).is_ok(), parses, "{}", String::from_utf8_lossy(body));
        assert_eq!(in_place::mask(&p, body, &tally).is_some(), parses, "{}", String::from_utf8_lossy(body));
        if !parses {
            assert!(tally.snapshot().is_empty(), "nothing counted for a refused document");
        }
    }
    // Nesting: both paths stop at the same depth.
    for depth in 120..136 {
        let body = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let parses = serde_json::from_slice::<Value>(body.as_bytes()).is_ok();
        assert_eq!(mask_document(&p, body.as_bytes(), &Tally::default()).is_ok(), parses, "depth {depth}");
        assert_eq!(in_place::mask(&p, body.as_bytes(), &Tally::default()).is_some(), parses, "depth {depth}");
        assert_eq!(parses, depth < 128, "serde_json's nesting limit");
    }
}

proptest::proptest! {
    /// Any sequence of JSON tokens, most of them not a document: masked if and only if it
    /// parses.
    #[test]
    fn a_run_of_tokens_is_masked_if_and_only_if_it_parses(
        tokens in proptest::collection::vec(
            proptest::sample::select(vec![
                "{", "}", "[", "]", ",", ":", " ", "\"note\"", "\"a\\tb\"", "\"x\\u00\"", "0", "-1.5e3",
                "01", "true", "nul", "null", "\"ssn\"", "\"219-09-9999\"",
            ]),
            0..24,
        ),
    ) {
        let text = tokens.concat();
        let p = profile(vec![]);
        let parses = serde_json::from_slice::<Value>(text.as_bytes()).is_ok();
        let got = mask_document(&p, text.as_bytes(), &Tally::default());
        proptest::prop_assert_eq!(got.is_ok(), parses, "{}", text);
    }

    /// One byte changed in a generated document: masked if and only if it still parses.
    #[test]
    fn a_changed_document_is_masked_if_and_only_if_it_parses(
        v in json_value(),
        at in 0..4096_usize,
        how in 0..3_u8,
        with in proptest::sample::select(&b"{}[],:\"\\ 0-.eE+tfnu\x01a"[..]),
    ) {
        let mut text = serde_json::to_vec(&v).unwrap();
        let at = at % (text.len() + 1);
        match how {
            0 => text.insert(at, with),
            1 if at < text.len() => { text.remove(at); }
            _ if at < text.len() => text[at] = with,
            _ => text.push(with),
        }
        let p = profile(vec![]);
        let parses = serde_json::from_slice::<Value>(&text).is_ok();
        let got = mask_document(&p, &text, &Tally::default());
        proptest::prop_assert_eq!(got.is_ok(), parses, "{}", String::from_utf8_lossy(&text));
    }
}

/// A base64 payload is decoded and masked before any field rule on its key applies, on
/// both paths: a rule that keeps `data` does not send the SSN it encodes.
#[test]
fn a_payload_is_masked_whatever_the_field_rule_on_its_key() {
    use base64::Engine as _;
    let body = br#"{"mimeType":"text/plain","data":"cGF0aWVudCBzc24gMjE5LTA5LTk5OTk="}"#;
    for action in [Action::Keep, Action::Redact] {
        let p = profile(vec![rule(FieldSelector::Key("data".into()), action, "data")]);
        assert!(in_place::mask(&p, body, &Tally::default()).is_none(), "the tree walk's");
        let (t_doc, t_tree) = (Tally::default(), Tally::default());
        let out: Value = serde_json::from_slice(&mask_document(&p, body, &t_doc).unwrap()).unwrap();
        let data = out["data"].as_str().unwrap();
        let text = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(data).unwrap()).unwrap();
        assert_eq!(text, "patient ssn [PHI:SSN]", "{action:?}");
        let want: Value = serde_json::from_slice(&tree(&p, body, &t_tree)).unwrap();
        assert_eq!(out, want);
        assert_eq!(t_doc.snapshot(), t_tree.snapshot());
    }
}

/// A key at the place of a clean one in the record before, but not the same, is judged
/// again: one that holds PHI sends the document to the tree walk.
#[test]
fn a_key_is_known_clean_only_when_it_is_the_same_key() {
    let p = profile(vec![]);
    for body in [&br#"[{"note":1},{"jane@example.org":1}]"#[..], br#"[{"abcdefghijklmnop":1},{"jane@example.org":1}]"#]
    {
        assert!(in_place::mask(&p, body, &Tally::default()).is_none(), "{}", String::from_utf8_lossy(body));
        let out = mask_document(&p, body, &Tally::default()).unwrap();
        assert!(!String::from_utf8_lossy(&out).contains("jane@example.org"));
    }
    let repeated = br#"[{"note":"a"},{"note":"b"},{"note":"c"}]"#;
    assert_eq!(in_place::mask(&p, repeated, &Tally::default()).unwrap(), repeated);
}

#[test]
fn a_document_keeps_its_key_order_and_spacing() {
    let p = profile(vec![]);
    let tally = Tally::default();
    let body = b"{ \"zeta\": \"call 617-555-0123\",\n  \"alpha\": [1, 2.50, true, null] }\n";
    let out = mask_document(&p, body, &tally).unwrap();
    assert_eq!(out, b"{ \"zeta\": \"call [PHI:PHONE]\",\n  \"alpha\": [1, 2.50, true, null] }\n");
    assert_eq!(tally.snapshot()["PHONE"], 1);
    // A key is context for its value, as in the tree walk: a bare number is an MRN here.
    let out = mask_document(&p, br#"{"mrn": "028939", "n": "028939", "ssn": 219099999}"#, &tally).unwrap();
    assert_eq!(out, br#"{"mrn": "[PHI:MRN]", "n": "028939", "ssn": "[PHI:SSN]"}"#);
    // Escaped keys are read as what they say; a string may end in an escaped backslash.
    let out = mask_document(&p, br#"{"s\u0073n": "219099999", "x": "a\\", "y": "q\"617-555-0123\""}"#, &tally).unwrap();
    assert_eq!(out, br#"{"s\u0073n": "[PHI:SSN]", "x": "a\\", "y": "q\"[PHI:PHONE]\""}"#);
    // A number is judged in the spelling the client receives: one that the tree walk would
    // round (and so judge as `9.876543210987654e19`) is left to the tree walk.
    let out = mask_document(&p, br#"{"account": 98765432109876543210, "n": 1E+2, "z": -0}"#, &tally).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains("98765432109876543210"), "{text}");
    // So is one in an array, judged under the nearest key above it.
    let out = mask_document(&p, br#"{"x": {"account": [98765432109876543210]}}"#, &tally).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains("98765432109876543210"), "{text}");
    let out = mask_document(&p, br#"{"n": 1E+2, "z": -0, "f": 2.50}"#, &tally).unwrap();
    assert_eq!(out, br#"{"n": 1E+2, "z": -0, "f": 2.50}"#);
    // What this path leaves to the tree walk comes out as the tree walk writes it.
    let out = mask_document(&p, b"{\"b\": 1, \"a\": {\"jane@example.org\": 2}}", &tally).unwrap();
    assert_eq!(out, br#"{"a":{"[PHI:EMAIL]":2},"b":1}"#);
}

fn profile(fields: Vec<FieldRule>) -> Arc<Profile> {
    let det = Arc::new(Detector::new(&[], &[]).unwrap());
    let spec = ProfileSpec { fields, ..ProfileSpec::redact_all("t") };
    Arc::new(Profile::new(det, spec, None).unwrap())
}

#[test]
fn field_rules_mask_whole_values_and_drop_fields() {
    let p = profile(vec![
        FieldRule {
            selector: FieldSelector::Key("patient_name".into()),
            action: Action::Redact,
            label: "patient_name".into(),
        },
        FieldRule {
            selector: FieldSelector::path("$.patient.dob").unwrap(),
            action: Action::Drop,
            label: "dob".into(),
        },
        FieldRule {
            selector: FieldSelector::path("$.rows[*].mrn").unwrap(),
            action: Action::Null,
            label: "mrn".into(),
        },
    ]);
    let tally = Tally::default();
    let mut v = json!({
        "patient": {"patient_name": "Zed Q", "dob": "1980-01-02", "note": "call 617-555-0123"},
        "rows": [{"mrn": 12345}, {"mrn": "A-1"}],
        "ok": 3
    });
    mask_value(&p, &mut v, &tally);
    assert_eq!(v["patient"]["patient_name"], "[PHI:patient_name]");
    assert!(v["patient"].get("dob").is_none());
    assert_eq!(v["patient"]["note"], "call [PHI:PHONE]");
    assert_eq!(v["rows"][0]["mrn"], Value::Null);
    assert_eq!(v["rows"][1]["mrn"], Value::Null);
    assert_eq!(v["ok"], 3);
    let counts = tally.snapshot();
    assert_eq!(counts["mrn"], 2);
    assert_eq!(counts["PHONE"], 1);
}

#[test]
fn keys_numbers_in_arrays_and_token_side_channels_are_masked() {
    let p = profile(vec![]);
    let tally = Tally::default();
    let mut v = json!({"jane@example.org": 1, "phones": ["x", 2_190_999_999_u64], "logprobs": {"content": [{"token": "219"}]},
        "context": [1, 2, 3], "ssn": 219_099_999});
    mask_value(&p, &mut v, &tally);
    assert!(v.get("jane@example.org").is_none() && v.get("[PHI:EMAIL]").is_some(), "{v}");
    assert_eq!(v["logprobs"], Value::Null);
    assert_eq!(v["context"], Value::Null);
    assert_eq!(v["ssn"], "[PHI:SSN]", "{v}");
    // Records repeat their keys: a key with PHI in it is masked in every record, not only
    // the first (clean keys are remembered, others are not).
    let mut v = json!([{"id": 1, "jane@example.org": 1}, {"id": 2, "jane@example.org": 2}]);
    mask_value(&p, &mut v, &tally);
    assert_eq!(v, json!([{"id": 1, "[PHI:EMAIL]": 1}, {"id": 2, "[PHI:EMAIL]": 2}]));
}

fn chunk(content: Option<&str>, finish: Option<&str>) -> Value {
    let mut delta = json!({});
    if let Some(c) = content {
        delta["content"] = json!(c);
    }
    json!({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
}

fn concat_content(events: &[Value]) -> String {
    events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect()
}

#[test]
fn an_ssn_split_across_openai_deltas_is_masked_and_nothing_is_lost() {
    let p = profile(vec![]);
    let tally = Arc::new(Tally::default());
    let mut m = EventMasker::new(p, tally.clone());
    let mut out = Vec::new();
    for piece in ["My SSN is 123-4", "5-67", "89 and mail jo", "e@exa", "mple.com ok"] {
        out.extend(m.event(chunk(Some(piece), None)).unwrap());
    }
    out.extend(m.event(chunk(None, Some("stop"))).unwrap());
    out.extend(m.finish());
    assert_eq!(concat_content(&out), "My SSN is [PHI:SSN] and mail [PHI:EMAIL] ok");
    assert!(out.iter().all(|e| !e.to_string().contains("6789") && !e.to_string().contains("mple.com")));
    assert_eq!(tally.snapshot()["SSN"], 1);
}

#[test]
fn text_held_at_the_end_of_the_stream_comes_out_in_an_event_shaped_like_the_last() {
    let p = profile(vec![]);
    let mut m = EventMasker::new(p, Arc::new(Tally::default()));
    let mut out = m.event(chunk(Some("reach me at 617-555-01"), None)).unwrap();
    out.extend(m.event(chunk(Some("23"), None)).unwrap());
    let tail = m.finish();
    assert_eq!(tail.len(), 1, "{tail:?}");
    assert_eq!(tail[0]["id"], "c1");
    out.extend(tail);
    assert_eq!(concat_content(&out), "reach me at [PHI:PHONE]");
}

#[test]
fn anthropic_blocks_release_held_text_before_their_stop_event() {
    let p = profile(vec![]);
    let mut m = EventMasker::new(p, Arc::new(Tally::default()));
    let d = |t: &str| json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}});
    let mut out = m.event(d("SSN 123-45-")).unwrap();
    out.extend(m.event(d("6789 Bob")).unwrap());
    out.extend(m.event(json!({"type": "content_block_stop", "index": 0})).unwrap());
    let text: String = out.iter().filter_map(|e| e["delta"]["text"].as_str()).collect();
    assert_eq!(text, "SSN [PHI:SSN] Bob");
    assert_eq!(out.last().unwrap()["type"], "content_block_stop");
}

#[test]
fn ollama_done_line_carries_the_rest() {
    let p = profile(vec![]);
    let mut m = EventMasker::new(p, Arc::new(Tally::default()));
    let mut out = m.event(json!({"model": "m", "response": "email: a.b@exam", "done": false})).unwrap();
    out.extend(m.event(json!({"model": "m", "response": "ple.org", "done": false})).unwrap());
    out.extend(m.event(json!({"model": "m", "response": "", "done": true})).unwrap());
    let text: String = out.iter().filter_map(|e| e["response"].as_str()).collect();
    assert_eq!(text, "email: [PHI:EMAIL]");
}

#[test]
fn base64_payloads_are_read_as_their_type_or_emptied() {
    use base64::Engine as _;
    let b64 = |t: &[u8]| base64::engine::general_purpose::STANDARD.encode(t);
    let p = profile(vec![]);
    let tally = Tally::default();
    let doc = json!({"result": {"contents": [
        {"uri": "file:///a.txt", "mimeType": "text/plain", "blob": b64(b"SSN 219-09-9999")},
        {"uri": "file:///a.json", "mimeType": "application/json", "blob": b64(br#"{"mail":"jane\u0040example.org"}"#)},
        {"type": "image", "mimeType": "image/png", "data": b64(b"\x89PNG SSN 219-09-9999")},
    ]}, "data": "plain text stays", "audio": {"data": b64(b"RIFF"), "transcript": "ok"}, "images": [{"b64_json": b64(b"x")}]});
    let out = mask_document(&p, serde_json::to_string(&doc).unwrap().as_bytes(), &tally).unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    let text = |s: &Value| {
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s.as_str().unwrap()).unwrap()).unwrap()
    };
    assert_eq!(text(&v["result"]["contents"][0]["blob"]), "SSN [PHI:SSN]");
    assert_eq!(text(&v["result"]["contents"][1]["blob"]), r#"{"mail":"[PHI:EMAIL]"}"#);
    assert_eq!(v["result"]["contents"][2]["data"], "", "an image cannot be read");
    assert_eq!(v["data"], "plain text stays");
    assert_eq!(v["audio"]["data"], "");
    assert_eq!(v["images"][0]["b64_json"], "");
    assert_eq!(tally.snapshot()["UNREADABLE"], 3);
}

/// Gemini, TGI, llama.cpp and the rarer OpenAI delta fields: a value split across events
/// is judged joined, and what is held back comes out with the event that ends the piece.
#[test]
fn other_runtimes_streamed_fields_are_joined() {
    let p = profile(vec![]);
    let gemini = |t: &str, end: bool| {
        json!({"candidates": [{"index": 0, "content": {"parts": [{"text": t}], "role": "model"},
            "finishReason": if end { json!("STOP") } else { Value::Null }}]})
    };
    let tgi = |t: &str, end: bool| json!({"token": {"id": 1, "text": t, "special": false}, "generated_text": if end { json!("…") } else { Value::Null }});
    let llamacpp = |t: &str, end: bool| json!({"content": t, "stop": end});
    let openai = |field: &str, t: &str, end: bool| {
        let delta = match field {
            "refusal" => json!({"refusal": t}),
            "audio" => json!({"audio": {"transcript": t}}),
            _ => json!({"function_call": {"arguments": t}}),
        };
        json!({"choices": [{"index": 0, "delta": delta, "finish_reason": if end { json!("stop") } else { Value::Null }}]})
    };
    type Shape<'a> = (&'a str, Box<dyn Fn(&str, bool) -> Value + 'a>);
    let shapes: Vec<Shape> = vec![
        ("gemini", Box::new(gemini)),
        ("tgi", Box::new(tgi)),
        ("llamacpp", Box::new(llamacpp)),
        ("refusal", Box::new(|t: &str, e| openai("refusal", t, e))),
        ("audio", Box::new(|t: &str, e| openai("audio", t, e))),
        ("function_call", Box::new(|t: &str, e| openai("function_call", t, e))),
    ];
    for (name, shape) in &shapes {
        let mut m = EventMasker::new(p.clone(), Arc::new(Tally::default()));
        let mut out = Vec::new();
        for piece in ["SSN 219", "-09-", "9999 ok"] {
            out.extend(m.event(shape(piece, false)).unwrap());
        }
        out.extend(m.event(shape("", true)).unwrap());
        let all = serde_json::to_string(&out).unwrap();
        assert!(all.contains("[PHI:SSN]") && !all.contains("9999"), "{name}: {all}");
    }
}

/// A route's `stream_fields` make any other shape's pieces one stream per field and element.
#[test]
fn configured_stream_fields_are_joined() {
    let p = profile(vec![]);
    let fields: Arc<[Vec<PathSeg>]> = Arc::from(vec![match FieldSelector::path("$.out[*].piece").unwrap() {
        FieldSelector::Path(segs) => segs,
        _ => unreachable!(),
    }]);
    let ev = |a: &str, b: &str| json!({"out": [{"piece": a}, {"piece": b}], "seq": 1});
    let mut plain = EventMasker::new(p.clone(), Arc::new(Tally::default()));
    let mut m = EventMasker::with_fields(p, Arc::new(Tally::default()), fields);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (x, y) in [("SSN 219", "mail jane"), ("-09-99", "@example"), ("99 ok", ".org now")] {
        a.extend(m.event(ev(x, y)).unwrap());
        b.extend(plain.event(ev(x, y)).unwrap());
    }
    a.extend(m.finish());
    let all = serde_json::to_string(&a).unwrap();
    assert!(all.contains("[PHI:SSN]") && all.contains("[PHI:EMAIL]") && !all.contains("9999"), "{all}");
    assert!(!serde_json::to_string(&b).unwrap().contains("[PHI:SSN]"), "without them the pieces pass one by one");
}

/// A response that opens more streams than the gateway keeps is refused, not masked
/// event by event.
#[test]
fn too_many_streams_fail_closed() {
    let p = profile(vec![]);
    let mut m = EventMasker::new(p, Arc::new(Tally::default()));
    let choice = |i: usize| json!({"choices": [{"index": i, "delta": {"content": "219"}}]});
    for i in 0..crate::mask::MAX_STREAMS {
        m.event(choice(i)).unwrap();
    }
    let err = m.event(choice(crate::mask::MAX_STREAMS)).unwrap_err();
    assert!(matches!(err, crate::mask::MaskError::TooManyStreams(_)), "{err}");
}

#[test]
fn a_label_a_json_string_must_escape_is_escaped_in_the_document() {
    let custom =
        crate::mask::detect::CustomEntity { name: "Q\"\\ID".into(), pattern: r"\bQ-\d{4}\b".into(), confidence: 1.0 };
    let det = Arc::new(Detector::new(&[custom], &[]).unwrap());
    let p = Profile::new(det, ProfileSpec::redact_all("t"), None).unwrap();
    assert!(!p.plain_labels);
    let tally = Tally::default();
    let out = mask_document(&p, br#"{"ref": "see Q-1234 now", "n": 5}"#, &tally).unwrap();
    let v: Value = serde_json::from_slice(&out).expect("the masked document is JSON");
    assert_eq!(v["ref"], "see [PHI:Q\"\\ID] now");
    assert!(profile(Vec::new()).plain_labels, "the built-in labels need no escape");
}
