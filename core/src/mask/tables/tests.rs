use std::sync::Arc;

use proptest::prelude::*;

use crate::mask::tests::{profile, streamed};
use crate::mask::{Detector, Profile, ProfileSpec, Tally};

fn masked(p: &Arc<Profile>, text: &str) -> String {
    String::from_utf8(p.mask_text(text.as_bytes(), &Tally::default())).unwrap()
}

/// Values that say nothing alone and are found beside their field's name.
const CELLS: &[(&str, &str, &str)] = &[
    ("mrn", "028939", "MRN"),
    ("Member ID", "W123456789", "HEALTH_PLAN"),
    ("license_no", "F326865635515", "LICENSE"),
    ("zip", "52201", "ZIP"),
];

#[test]
fn a_cell_is_masked_as_the_value_of_its_columns_field() {
    let p = profile();
    for &(name, value, label) in CELLS {
        assert_eq!(masked(&p, value), value, "{value} alone");
        let keyed = String::from_utf8(p.mask_keyed(name, value.as_bytes(), &Tally::default())).unwrap();
        assert_eq!(keyed, format!("[PHI:{label}]"), "{name}: {value}");
    }
    let names: Vec<&str> = CELLS.iter().map(|c| c.0).collect();
    let values: Vec<&str> = CELLS.iter().map(|c| c.1).collect();
    let tables = [
        // psql, aligned, with its rule and row count.
        format!(" id | {} \n----+------\n 7 | {} \n(1 row)\n", names.join(" | "), values.join(" | ")),
        // Markdown, with its outer pipes and an alignment rule.
        format!("| id | {} |\n|---:|:---|---|---|---|\n| 7 | {} |\n", names.join(" | "), values.join(" | ")),
        // Pipes and tabs, as a program prints them, the last row without its line end.
        format!("id|{}\n7|{}", names.join("|"), values.join("|")),
        format!("id\t{}\r\n7\t{}\r\n", names.join("\t"), values.join("\t")),
    ];
    for table in &tables {
        let out = masked(&p, table);
        for &(_, value, label) in CELLS {
            assert!(!out.contains(value), "{value} survived in {out:?}");
            assert!(out.contains(&format!("[PHI:{label}]")), "{label} missing in {out:?}");
        }
        // The header is text like any other, and the id column says nothing.
        assert!(out.contains("mrn") && out.contains("7"), "{out:?}");
    }
}

#[test]
fn only_a_line_that_fits_the_header_is_a_row() {
    let p = profile();
    let kept = [
        // Another number of cells, another separator, a line in between with no cells.
        "mrn | id\n028939 | 7 | 3\n",
        "mrn | id\n028939\t7\n",
        "mrn | id\nsee below\n028939 | 7\n",
        // No header: one line alone.
        "028939 | 7\n",
    ];
    for text in kept {
        assert_eq!(masked(&p, text), text);
    }
    // A line longer than a row leaves the table as it was, and is no header.
    let long = format!("mrn | id\n{}|x\n028939 | 7\n", "a ".repeat(super::MAX_ROW));
    assert_eq!(masked(&p, &long), long.replace("028939", "[PHI:MRN]"));
    let long_header = format!("mrn | {}\n028939 | 7\n", "a".repeat(super::MAX_ROW));
    assert_eq!(masked(&p, &long_header), long_header);
    // Rows go on after a rule; the table ends at the first line with no cells.
    let out = masked(&p, "mrn | id\n--+--\n028939 | 7\n028940 | 8\n(2 rows)\n028941 | 9\n");
    assert_eq!(out, "mrn | id\n--+--\n[PHI:MRN] | 7\n[PHI:MRN] | 8\n(2 rows)\n028941 | 9\n");
    // A line with other cells does not end it; it heads the next table if a row of it comes.
    let out = masked(&p, "mrn | id\n028939 | 7\n028940 | 8 | x\n028941 | 9\n");
    assert_eq!(out, "mrn | id\n[PHI:MRN] | 7\n028940 | 8 | x\n[PHI:MRN] | 9\n");
    let out = masked(&p, "id | mrn\n7 | 028939\nx | y | mrn\n8 | 9 | 028940\n10 | 028941\n");
    assert_eq!(out, "id | mrn\n7 | [PHI:MRN]\nx | y | mrn\n8 | 9 | [PHI:MRN]\n10 | 028941\n");
}

#[test]
fn psql_expanded_output_masks_each_value_by_its_name() {
    let p = profile();
    let text = "-[ RECORD 1 ]-----\nid  | 7\nmrn | 028939\nzip | 52201\n-[ RECORD 2 ]-----\nid  | 8\nmrn | 028940 | x\n\nmrn | 028941\n";
    let want = "-[ RECORD 1 ]-----\nid  | 7\nmrn | [PHI:MRN]\nzip | [PHI:ZIP]\n-[ RECORD 2 ]-----\nid  | 8\nmrn | [PHI:MRN] | x\n\nmrn | 028941\n";
    assert_eq!(masked(&p, text), want);
    for cut in 0..text.len() {
        assert_eq!(streamed(&p, text.as_bytes(), &[cut]), want.as_bytes(), "cut at {cut}");
    }
}

#[test]
fn empty_cells_at_the_ends_of_a_row_are_cells() {
    let p = profile();
    // psql -A prints NULL as nothing; a tab-separated export does the same.
    for (text, want) in [
        ("id|mrn|note\n7|028939|\n|028940|x\n", "id|mrn|note\n7|[PHI:MRN]|\n|[PHI:MRN]|x\n"),
        ("id\tmrn\tnote\n7\t028939\t\n\t028940\tx\n", "id\tmrn\tnote\n7\t[PHI:MRN]\t\n\t[PHI:MRN]\tx\n"),
        // Markdown's outer pipes are not cells, and a one-column table has them.
        ("| id | mrn |\n|---|---|\n| | 028939 |\n", "| id | mrn |\n|---|---|\n| | [PHI:MRN] |\n"),
        ("| mrn |\n|---|\n| 028939 |\n", "| mrn |\n|---|\n| [PHI:MRN] |\n"),
        // A line with no `|` is no row of it: the table ends there.
        (
            "| zip |\n|---|\n| 52201 |\n\nOrder 52201 shipped\n",
            "| zip |\n|---|\n| [PHI:ZIP] |\n\nOrder 52201 shipped\n",
        ),
    ] {
        assert_eq!(masked(&p, text), want);
    }
}

#[test]
fn a_finding_the_profile_keeps_does_not_unmask_a_cell() {
    // 1234567893 is also a valid NPI, which this profile keeps; under `mrn` it is an MRN.
    let det = Arc::new(Detector::new(&[], &[]).unwrap());
    let spec = ProfileSpec { actions: vec![("NPI".into(), crate::mask::Action::Keep)], ..ProfileSpec::redact_all("k") };
    let p = Arc::new(Profile::new(det, spec, None).unwrap());
    assert_eq!(masked(&p, "NPI 1234567893"), "NPI 1234567893");
    let text = "mrn | x\n1234567893 | y\n";
    assert_eq!(masked(&p, text), "mrn | x\n[PHI:MRN] | y\n");
    assert_eq!(streamed(&p, text.as_bytes(), &[3, 12, 14]), masked(&p, text).as_bytes());
}

#[test]
fn a_match_from_the_line_before_a_row_shadows_it_in_a_stream_as_in_the_whole_text() {
    // A kept custom entity whose match runs from one row into the next, over its MRN: as
    // anywhere, a kept match hides what is inside it. A stream has emitted it by the time
    // the second row ends, and must agree with the whole text.
    let custom = crate::mask::CustomEntity { name: "CODE".into(), pattern: r"qq\n\d \| \d{6}".into(), confidence: 1.0 };
    let det = Arc::new(Detector::new(&[custom], &[]).unwrap());
    let spec =
        ProfileSpec { actions: vec![("CODE".into(), crate::mask::Action::Keep)], ..ProfileSpec::redact_all("k") };
    let p = Arc::new(Profile::new(det, spec, None).unwrap());
    let text = "id | mrn\n7 | qq\n5 | 028939\n6 | 028940\n";
    let whole = p.mask_text(text.as_bytes(), &Tally::default());
    assert_eq!(String::from_utf8_lossy(&whole), "id | mrn\n7 | qq\n5 | 028939\n6 | [PHI:MRN]\n");
    for cut in 0..text.len() {
        assert_eq!(streamed(&p, text.as_bytes(), &[cut]), whole, "cut at {cut}");
    }
    let every: Vec<usize> = (1..text.len()).collect();
    assert_eq!(streamed(&p, text.as_bytes(), &every), whole);
}

#[test]
fn rows_about_as_long_as_the_longest_read_in_a_stream_as_in_the_whole_text() {
    let p = profile();
    let mut text = String::from("note | mrn\n");
    for (i, n) in [super::MAX_ROW - 9, super::MAX_ROW - 8, super::MAX_ROW - 7, super::MAX_ROW - 6].iter().enumerate() {
        // `x…x | 02893i`: a line of n + 9 bytes, then one with a `\r` before its `\n`.
        text.push_str(&format!("{} | 02893{i}\n", "x".repeat(*n)));
        text.push_str(&format!("{} | 02894{i}\r\n", "x".repeat(*n)));
    }
    let t = text.as_bytes();
    let whole = p.mask_text(t, &Tally::default());
    let out = String::from_utf8_lossy(&whole);
    // The two rows of MAX_ROW bytes (without the `\r`) are masked; longer lines are not rows.
    assert_eq!(out.matches("[PHI:MRN]").count(), 2, "{}", out.replace('x', ""));
    assert!(out.contains("| [PHI:MRN]\n") && out.contains("| [PHI:MRN]\r\n") && out.contains("| 028931\n"));
    let every: Vec<usize> = (1..t.len()).collect();
    assert!(streamed(&p, t, &every) == whole, "byte by byte");
    for step in [7, 64, 1000, 4095, 4097] {
        let cuts: Vec<usize> = (step..t.len()).step_by(step).collect();
        assert!(streamed(&p, t, &cuts) == whole, "in pieces of {step}");
    }
}

#[test]
fn a_long_column_name_is_read_by_its_end() {
    let p = profile();
    let text = format!("{} mrn | id\n028939 | 7\n", "x".repeat(1000));
    assert!(masked(&p, &text) == text.replace("028939", "[PHI:MRN]"), "the cell under a long name");
    let mut prefix = Vec::new();
    super::prefix(format!("{}é mrn", "x".repeat(100)).as_bytes(), &mut prefix);
    assert_eq!(prefix.len(), super::MAX_NAME + b": ".len());
}

#[test]
fn a_value_of_a_document_or_a_row_masks_its_tables_too() {
    let p = profile();
    let body = br#"{"choices":[{"message":{"content":"| mrn | zip |\n|---|---|\n| 028939 | 52201 |"}}]}"#;
    let out = crate::mask::json::mask_document(&p, body, &Tally::default()).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "| mrn | zip |\n|---|---|\n| [PHI:MRN] | [PHI:ZIP] |");
    // A keyed value: its key is not a table's header.
    let out = p.mask_keyed("note", b"mrn\tzip\n028939\t52201", &Tally::default());
    assert_eq!(out, b"mrn\tzip\n[PHI:MRN]\t[PHI:ZIP]");
}

/// Tables of the cells above, with look-alikes, prose and entities the text finds itself
/// around them.
fn table_text() -> impl Strategy<Value = String> {
    let name = prop::sample::select(vec!["mrn", "zip", "Member ID", "license_no", "id", "note", "**Name**"]);
    let value = prop::sample::select(vec![
        "028939",
        "52201",
        "W123456789",
        "F326865635515",
        "Maria Garcia",
        "123-45-6789",
        "call 617-555-0123",
        "",
        "ok",
        "1234567893",
        "Dr. Lee",
    ]);
    // Cells joined by a separator, perhaps with Markdown's outer pipes.
    let row = |cells: Vec<&str>, sep: &str, outer: bool| {
        let line = cells.join(sep);
        if outer { format!("| {line} |") } else { line }
    };
    let line = prop_oneof![
        (prop::collection::vec(name, 1..4), prop::sample::select(vec![" | ", "|", "\t"]), any::<bool>())
            .prop_map(move |(cells, sep, outer)| row(cells, sep, outer)),
        (prop::collection::vec(value, 1..4), prop::sample::select(vec![" | ", "|", "\t"]), any::<bool>())
            .prop_map(move |(cells, sep, outer)| row(cells, sep, outer)),
        prop::sample::select(vec![
            "---+---",
            "|---|---|",
            "(2 rows)",
            "",
            "Seen by Dr. Emily Chen today.",
            "-[ RECORD 1 ]-+--"
        ])
        .prop_map(str::to_owned),
    ];
    (prop::collection::vec(line, 1..8), prop::sample::select(vec!["\n", "\r\n"]), any::<bool>())
        .prop_map(|(lines, end, last)| lines.join(end) + if last { end } else { "" })
}

proptest! {
    /// A stream masks tables as the whole text does, wherever the text is cut; and what a
    /// row's cells give is masked.
    #[test]
    fn any_split_of_a_table_masks_like_the_whole(
        text in table_text(),
        mut cuts in prop::collection::vec(0usize..400, 0..10),
        keeping in any::<bool>(),
    ) {
        // Also a profile that keeps NPIs and is not sure enough of a name pair alone: what
        // it leaves does not stand in the way of a cell's own finding.
        let p = if keeping {
            let det = Arc::new(Detector::new(&[], &[]).unwrap());
            let actions = vec![("NPI".into(), crate::mask::Action::Keep)];
            let spec = ProfileSpec { actions, min_confidence: 0.7, ..ProfileSpec::redact_all("k") };
            Arc::new(Profile::new(det, spec, None).unwrap())
        } else {
            profile()
        };
        let t = text.as_bytes();
        cuts.iter_mut().for_each(|c| *c %= t.len() + 1);
        cuts.sort_unstable();
        let whole = p.mask_text(t, &Tally::default());
        let got = streamed(&p, t, &cuts);
        prop_assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&whole));
        let every: Vec<usize> = (1..t.len()).collect();
        prop_assert_eq!(streamed(&p, t, &every), whole.clone());
        // Each value found is gone from the output: it is there as many times fewer.
        let out = String::from_utf8_lossy(&whole).into_owned();
        let found: Vec<_> = p.find(t).into_iter().filter(|f| p.applies(f)).collect();
        for f in &found {
            let value = &text[f.start..f.end];
            let times = found.iter().filter(|g| &text[g.start..g.end] == value).count();
            prop_assert!(
                out.matches(value).count() + times <= text.matches(value).count(),
                "{:?} survived: {:?}", value, out
            );
        }
    }
}
