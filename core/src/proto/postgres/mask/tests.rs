use super::*;
use crate::mask::{Detector, ProfileSpec};

fn masker(fields: Vec<FieldRule>) -> PgMasker {
    let det = Arc::new(Detector::new(&[], &[]).unwrap());
    let spec = ProfileSpec { fields, ..ProfileSpec::redact_all("t") };
    PgMasker::with(Arc::new(Profile::new(det, spec, None).unwrap()), Arc::new(Tally::default()), HashMap::new())
}

/// The fields of the error the caller gets for an upstream error with `fields`.
fn error(m: &mut PgMasker, fields: &[(u8, &str)]) -> Vec<(u8, String)> {
    let msg =
        BackendMessage::ErrorResponse(fields.iter().map(|(c, v)| (*c, Bytes::copy_from_slice(v.as_bytes()))).collect());
    let out = m.backend(&msg, backend::encode(&msg)).unwrap().unwrap();
    use airlock_decoders::Decoder as _;
    let mut buf = BytesMut::from(&out[..]);
    let Ok(Some(BackendMessage::ErrorResponse(got))) = backend::BackendDecoder::new(1 << 16).decode(&mut buf) else {
        panic!("{out:?}")
    };
    got.into_iter().map(|(c, v)| (c, String::from_utf8_lossy(&v).into_owned())).collect()
}

#[test]
fn rows_are_masked_value_by_value_as_mask_keyed_masks_each() {
    let mut m = masker(vec![]);
    // Text, varchar, numeric (structured: NULL on a finding) and bytea (hex) in text format, and
    // an int8 in binary format (read as its decimal text, NULL on a finding).
    let columns = [
        ("patient_name", 25, 0),
        ("member_id", 1043, 0),
        ("note", 25, 0),
        ("amount", 1700, 0),
        ("photo", BYTEA, 0),
        ("account", 20, 1),
    ];
    let fields = columns
        .iter()
        .map(|(name, type_oid, format)| FieldDescription {
            name: Bytes::from_static(name.as_bytes()),
            table_oid: 0,
            column: 0,
            type_oid: *type_oid,
            type_size: -1,
            type_modifier: -1,
            format: *format,
        })
        .collect();
    let desc = BackendMessage::RowDescription(fields);
    m.backend(&desc, backend::encode(&desc)).unwrap();
    let text = |v: &str| Some(v.as_bytes().to_vec());
    let int8 = |n: i64| Some(n.to_be_bytes().to_vec());
    let rows: Vec<Vec<Option<Vec<u8>>>> = vec![
        vec![
            text("Maria Garcia"),
            text("XK-20231"),
            text("SSN 219-09-9999, call 617-555-0123"),
            text("4111111111111111"),
            text("\\x6a616e65406578616d706c652e6f7267"),
            int8(4_111_111_111_111_111),
        ],
        vec![text("stable"), text("pending"), text("nothing to see"), text("12.50"), text("\\x00ff"), int8(42)],
        vec![None, text("H-99812"), text("seen by Dr. Lopez on 2024-03-02"), None, text("\\xzz"), None],
        // One value more than the description has: read as text with no name.
        vec![text("John Smith"), text("A1"), text(""), text("219099999"), None, int8(7), text("mail jane@example.org")],
    ];
    // What masking each value alone gives (the masker before rows shared their caches).
    let expected_tally = Tally::default();
    let alone = |name: &str, v: &[u8]| m.profile.mask_keyed(name, v, &expected_tally);
    let mut expected = Vec::new();
    for row in &rows {
        let cells: Vec<Option<Bytes>> = row
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let v = Bytes::from(v.clone()?);
                let Some(&(name, type_oid, _)) = columns.get(i) else { return Some(Bytes::from(alone("", &v))) };
                match type_oid {
                    1700 => (alone(name, &v) == v[..]).then_some(v),
                    BYTEA => unhex(&v).filter(|held| alone(name, held) == *held).map(|_| v),
                    20 => {
                        let n = binary_number_text(20, &v).unwrap();
                        (alone(name, n.as_bytes()) == n.as_bytes()).then_some(v)
                    }
                    _ => Some(Bytes::from(alone(name, &v))),
                }
            })
            .collect();
        expected.push(cells);
    }
    expected_tally.add("UNREADABLE", 1);
    for (row, want) in rows.iter().zip(expected) {
        let values = row.iter().map(|v| v.clone().map(Bytes::from)).collect();
        let msg = BackendMessage::DataRow(values);
        let out = m.backend(&msg, backend::encode(&msg)).unwrap().unwrap();
        use airlock_decoders::Decoder as _;
        let mut buf = BytesMut::from(&out[..]);
        let Ok(Some(BackendMessage::DataRow(got))) = backend::BackendDecoder::new(1 << 16).decode(&mut buf) else {
            panic!("{out:?}")
        };
        assert_eq!(got, want, "{row:?}");
    }
    assert_eq!(m.tally.snapshot(), expected_tally.snapshot());
    let kinds = m.tally.snapshot();
    assert!(
        kinds.len() > 3 && kinds["CREDIT_CARD"] == 2,
        "findings of several kinds, a card in numeric and in int8: {kinds:?}"
    );
}

#[test]
fn errors_are_masked_in_every_text_field_with_their_key_as_context() {
    let mut m = masker(vec![]);
    let got = error(
        &mut m,
        &[
            (b'S', "ERROR"),
            (b'C', "23505"),
            (b'M', "duplicate key value violates unique constraint \"p_mrn_key\""),
            (b'D', "Key (mrn)=(00123456) already exists."),
            (b'c', "SSN 219-09-9999"),
            (b't', "jane@example.org"),
        ],
    );
    assert_eq!(got[1], (b'C', "23505".into()));
    assert_eq!(got[3], (b'D', "Key (mrn)=([PHI:MRN]) already exists.".into()), "the key is context");
    assert_eq!(got[4], (b'c', "SSN [PHI:SSN]".into()), "server code can fill any field");
    assert_eq!(got[5], (b't', "[PHI:EMAIL]".into()));
    // A column rule on a key column applies to the value the error quotes.
    let rule = FieldRule {
        selector: FieldSelector::Column { table: Some("patients".into()), column: "ssn".into() },
        action: Action::Partial(4),
        label: "ssn".into(),
    };
    let mut m = masker(vec![rule]);
    let got = error(&mut m, &[(b'D', "Key (ssn)=(219-09-9999) already exists.")]);
    assert_eq!(got[0].1, "Key (ssn)=(***-**-9999) already exists.");
    // A whole failing row cannot be read by column rules: withheld.
    let got = error(&mut m, &[(b'D', "Failing row contains (1, Quentin Zed, null).")]);
    assert!(!got[0].1.contains("Quentin"), "{got:?}");
}

/// `numeric` in binary: ndigits, weight, sign, dscale, base-10000 digits.
fn numeric(weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [digits.len() as u16, weight as u16, sign, dscale] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    digits.iter().for_each(|d| v.extend_from_slice(&d.to_be_bytes()));
    v
}

#[test]
fn copy_rows_are_read_with_their_escapes_as_breaks() {
    assert_eq!(copy_row_read(b"1\tplain\n"), None);
    assert_eq!(copy_row_read(b"a\\nb\\\\nc\\,").unwrap(), b"a  b \\nc ,");
    let mut m = masker(vec![]);
    m.copy_out = true;
    let row = b"1\tNote\\n219-09-9999\\tmail\\\\jane@example.org\n";
    let msg = BackendMessage::CopyData(Bytes::from_static(row));
    let out = m.backend(&msg, backend::encode(&msg)).unwrap().unwrap();
    let body = &out[5..];
    assert_eq!(body, b"1\tNote\\n[PHI:SSN]\\tmail\\\\[PHI:EMAIL]\n");
}

#[test]
fn bytea_is_read_as_the_bytes_it_holds() {
    assert_eq!(unhex(b"\\x53534e20"), Some(b"SSN ".to_vec()));
    assert_eq!(unhex(b"\\x"), Some(vec![]));
    assert_eq!(unhex(b"\\x5"), None);
    assert_eq!(unhex(b"SSN\\040"), None, "the escape format is not read");
    let m = masker(vec![]);
    let hex = |t: &[u8]| Bytes::from(format!("\\x{}", t.iter().map(|b| format!("{b:02x}")).collect::<String>()));
    let col = Column::Bytea { hex: true };
    assert_eq!(m.value(col, "doc", Some(hex(b"SSN 219-09-9999")), &mut Values::new(&m.profile)), None);
    assert_eq!(
        m.value(col, "doc", Some(hex(b"\x00\x01plain")), &mut Values::new(&m.profile)),
        Some(hex(b"\x00\x01plain"))
    );
    assert_eq!(
        m.value(col, "doc", Some(Bytes::from_static(b"\\x0g")), &mut Values::new(&m.profile)),
        None,
        "unreadable hex"
    );
    let raw = Column::Bytea { hex: false };
    assert_eq!(
        m.value(raw, "doc", Some(Bytes::from_static(b"mail jane@example.org")), &mut Values::new(&m.profile)),
        None
    );
    assert_eq!(
        m.value(raw, "doc", Some(Bytes::from_static(b"\x89PNG")), &mut Values::new(&m.profile)),
        Some(Bytes::from_static(b"\x89PNG"))
    );
}

#[test]
fn binary_numbers_read_as_postgresql_writes_them() {
    assert_eq!(binary_number_text(1700, &numeric(3, 0, 0, &[4111, 1111, 1111, 1111])).unwrap(), "4111111111111111");
    assert_eq!(binary_number_text(1700, &numeric(0, 0x4000, 2, &[12, 3400])).unwrap(), "-12.34");
    assert_eq!(binary_number_text(1700, &numeric(-1, 0, 5, &[5])).unwrap(), "0.00050");
    assert_eq!(binary_number_text(1700, &numeric(1, 0, 0, &[7])).unwrap(), "70000");
    assert_eq!(binary_number_text(1700, &numeric(0, 0, 0, &[])).unwrap(), "0");
    assert_eq!(binary_number_text(1700, &numeric(0, 0xC000, 0, &[])).unwrap(), "NaN");
    assert_eq!(binary_number_text(701, &4111111111111111f64.to_be_bytes()).unwrap(), "4111111111111111");
    assert_eq!(binary_number_text(26, &7u32.to_be_bytes()).unwrap(), "7");
    assert_eq!(binary_number_text(1700, &numeric(0, 0, 0, &[10000])), None, "a digit past 9999");
    assert_eq!(binary_number_text(1700, &[0, 5, 0]), None, "too short");
    assert_eq!(binary_number_text(23, &[0, 0, 1]), None);
}
