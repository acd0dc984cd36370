use std::sync::Arc;

use proptest::prelude::*;

use super::*;

/// Texts with every built-in entity, look-alikes, and non-ASCII around them.
const CORPUS: &[&str] = &[
    "Patient: John Smith, DOB 04/17/1962, SSN 123-45-6789, MRN: 00123456.",
    "Call (617) 555-0123 or mail john.smith@example.org; portal https://ehr.example.com/p/991?x=1.",
    "Card 4111 1111 1111 1111, NPI 1234567893, DEA AB1234563, IMEI 490154203237518.",
    "IBAN GB82 WEST 1234 5698 7654 32 and VIN 1M8GDM9AXKP042788 from 10.0.0.12 / 2001:db8::1.",
    "Lives at 77 Beacon St, Apt 4B, Boston, MA 02115; seen by Dr. Emily Chen on April 17, 2023.",
    "Décès évité — Ms. María ok; ünïcode 12-34 around café 123-45-6789 ✓ 日本 617-555-0123",
    "CPT 99213, 500 mg, BP 120/80, v1.2.3.4.5 at 10:30, card 4111 1111 1111 1112 declined.",
    "Member ID: W123456789; Account number: 123456789012; driver's license S12345678.",
    "{\"patient_name\": \"Maria Garcia\", \"ssn\": \"219-09-9999\", \"email\": \"m.g@clinic.example\"}",
    "mac 00:1A:2B:3C:4D:5E and 001a.2b3c.4d5e, zip 02115-1234, +447911123456 end",
];

pub(super) fn profile() -> Arc<Profile> {
    let det = Arc::new(Detector::new(&[], &[]).unwrap());
    let spec = ProfileSpec::redact_all("all");
    Arc::new(Profile::new(det, spec, None).unwrap())
}

pub(super) fn streamed(p: &Arc<Profile>, text: &[u8], cuts: &[usize]) -> Vec<u8> {
    streamed_with(p.stream(Arc::new(Tally::default())), text, cuts)
}

fn streamed_with(mut s: TextStream, text: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    for &c in cuts {
        out.extend(s.push(&text[at..c]));
        at = c;
    }
    out.extend(s.push(&text[at..]));
    out.extend(s.finish());
    out
}

#[test]
fn every_single_cut_and_byte_by_byte_give_the_whole_text_answer() {
    let p = profile();
    for text in CORPUS {
        let t = text.as_bytes();
        let whole = p.mask_text(t, &Tally::default());
        for cut in 0..=t.len() {
            assert_eq!(streamed(&p, t, &[cut]), whole, "cut at {cut} of {text:?}");
        }
        let every: Vec<usize> = (1..t.len()).collect();
        assert_eq!(streamed(&p, t, &every), whole, "byte by byte: {text:?}");
    }
}

#[test]
fn nothing_detected_survives_masking() {
    let p = profile();
    for text in CORPUS {
        let t = text.as_bytes();
        let out = p.mask_text(t, &Tally::default());
        for f in p.detector().find_all(t) {
            let value = &t[f.start..f.end];
            assert!(
                !out.windows(value.len()).any(|w| w == value),
                "{:?} survived in {:?}",
                String::from_utf8_lossy(value),
                String::from_utf8_lossy(&out)
            );
        }
        assert!(
            p.detector().find_all(&out).is_empty(),
            "masked output still has findings: {}",
            String::from_utf8_lossy(&out)
        );
        assert!(std::str::from_utf8(&out).is_ok());
    }
}

proptest! {
    #[test]
    fn any_split_of_corpus_text_masks_like_the_whole(idx in 0..CORPUS.len(), mut cuts in proptest::collection::vec(0usize..400, 0..12)) {
        let p = profile();
        let t = CORPUS[idx].as_bytes();
        cuts.iter_mut().for_each(|c| *c %= t.len() + 1);
        cuts.sort_unstable();
        let whole = p.mask_text(t, &Tally::default());
        prop_assert_eq!(streamed(&p, t, &cuts), whole);
    }

    #[test]
    fn markup_in_any_pieces_masks_like_one_piece_and_clean_markup_passes_as_written(
        text in "([a-z@.<>/; 0-9-]|&|&#|&#[0-9]{1,3};?|&#x[0-9a-fA-F]{1,3};?|&commat;|&period;|&lt;|&amp|&#64;|<em>|</em>|<B>|</b|<div>|<i class=\"q\">|<!-- c -->){0,60}",
        mut cuts in proptest::collection::vec(0usize..400, 0..8),
    ) {
        let p = profile();
        let t = text.as_bytes();
        cuts.iter_mut().for_each(|c| *c %= t.len() + 1);
        cuts.sort_unstable();
        let whole = streamed_with(p.markup_stream(Arc::new(Tally::default()), true), t, &[]);
        prop_assert_eq!(streamed_with(p.markup_stream(Arc::new(Tally::default()), true), t, &cuts), whole.clone());
        // Every bare inline tag is written once, masked or not (fewer than 64 in a row here).
        let count = |hay: &[u8], tag: &[u8]| hay.windows(tag.len()).filter(|w| w.eq_ignore_ascii_case(tag)).count();
        for tag in [b"<em>".as_slice(), b"</em>", b"<b>", b"<i class=\"q\">", b"<!-- c -->"] {
            prop_assert_eq!(count(&whole, tag), count(t, tag));
        }
        if !whole.windows(5).any(|w| w == b"[PHI:") {
            prop_assert_eq!(whole, t.to_vec());
        }
    }

    #[test]
    fn arbitrary_text_and_splits_never_panic_and_agree(text in "[ -~\\n]{0,120}|[0-9 ().:@+-]{0,80}", mut cuts in proptest::collection::vec(0usize..200, 0..8)) {
        let p = profile();
        let t = text.as_bytes();
        cuts.iter_mut().for_each(|c| *c %= t.len() + 1);
        cuts.sort_unstable();
        prop_assert_eq!(streamed(&p, t, &cuts), p.mask_text(t, &Tally::default()));
    }
}

#[test]
fn actions_redact_keep_the_tail_pseudonymize_and_keep_the_year() {
    let det = Arc::new(Detector::new(&[], &[]).unwrap());
    let spec = ProfileSpec {
        name: "mixed".into(),
        default_action: Action::Redact,
        actions: vec![
            ("SSN".into(), Action::Partial(4)),
            ("EMAIL".into(), Action::Pseudonymize),
            ("PHONE".into(), Action::Keep),
        ],
        min_confidence: 0.0,
        fields: vec![],
        keep_year: true,
    };
    let p = Profile::new(det.clone(), spec.clone(), Some(b"k1")).unwrap();
    let t = Tally::default();
    let out = p.mask_str("SSN 123-45-6789, a@b.org, A@B.org, 617-555-0123, born 1980-01-02", &t);
    let token = out.split("EMAIL_").nth(1).unwrap()[..12].to_owned();
    assert_eq!(out, format!("SSN ***-**-6789, EMAIL_{token}, EMAIL_{token}, 617-555-0123, born [PHI:DATE:1980]"));
    assert!(token.bytes().all(|b| b.is_ascii_lowercase()));
    let other = Profile::new(det.clone(), spec.clone(), Some(b"k2")).unwrap();
    assert!(!other.mask_str("a@b.org", &t).contains(&token), "another key, another token");
    assert_eq!(t.snapshot()["EMAIL"], 3);
    assert!(!t.snapshot().contains_key("PHONE"), "kept values are not counted");
    let no_key = Profile::new(det, spec, None).unwrap_err();
    assert!(no_key.to_string().contains("pseudonym_key"));
}

/// A finished stream's cache goes to the next stream, which masks as a new one would, and the
/// detector keeps only a few.
#[test]
fn streams_reuse_the_caches_finished_streams_give_back() {
    let p = profile();
    let det = p.detector().clone();
    assert_eq!(det.spare_stream_caches(), 0);
    for text in CORPUS {
        let whole = p.mask_text(text.as_bytes(), &Tally::default());
        let cuts: Vec<usize> = (1..text.len()).step_by(7).collect();
        assert_eq!(streamed(&p, text.as_bytes(), &cuts), whole, "{text}");
        assert_eq!(det.spare_stream_caches(), 1, "the stream's cache is back, and taken again");
    }
    let many: Vec<TextStream> = (0..20).map(|_| p.stream(Arc::new(Tally::default()))).collect();
    assert_eq!(det.spare_stream_caches(), 0, "the first stream took the spare one");
    drop(many);
    assert_eq!(det.spare_stream_caches(), detect::SPARE_STREAM_CACHES, "at most this many kept");
}

#[test]
fn the_fuzz_seed_corpus_runs_clean() {
    let dir = crate::fuzz_corpus("mask_stream");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        fuzz_stream(&std::fs::read(entry.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n >= 4, "seeds in {}", dir.display());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// The fuzz target's property under proptest's generator (cargo-fuzz is not installed here):
    /// arbitrary bytes, arbitrary cut size, both maskers.
    #[test]
    fn the_fuzz_property_holds_for_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzz_stream(&data);
    }
}

#[test]
fn a_byte_pattern_ending_inside_a_character_does_not_panic_a_stream() {
    let custom = [CustomEntity { name: "ID".into(), pattern: r"ID-.{4}".into(), confidence: 1.0 }];
    let det = Arc::new(Detector::new(&custom, &[]).unwrap());
    let spec = ProfileSpec::redact_all("c");
    let p = Arc::new(Profile::new(det, spec, None).unwrap());
    let t = "ID-ID-é and more".as_bytes();
    for cut in 0..=t.len() {
        let out = streamed(&p, t, &[cut]);
        assert!(std::str::from_utf8(&out).is_ok(), "cut {cut}: {out:?}");
    }
}

#[test]
fn a_whole_markup_value_masks_as_the_markup_stream_does_and_keeps_its_key_as_context() {
    let p = profile();
    let t = Tally::default();
    for text in [
        "<note>SSN 219&#45;09&#45;9999, mail jane&#64;example.org</note>",
        "<p>clean &amp; &#60;plain&#62; text</p>",
        "<r><ssn>219-09-9999</ssn>&#x20;</r>",
    ] {
        let whole = streamed_with(p.markup_stream(Arc::new(Tally::default()), false), text.as_bytes(), &[]);
        assert_eq!(p.mask_markup_keyed("note", text.as_bytes(), false, &t), whole, "{text}");
    }
    let out = p.mask_markup_keyed("note", b"<n>219&#45;09&#45;9999</n>", false, &t);
    assert_eq!(String::from_utf8(out).unwrap(), "<n>[PHI:SSN]</n>");
    // The key says what a bare value is, as for a text column (`mrn: 00123456`).
    let bare = b"00123456&#32;";
    assert_eq!(p.mask_markup_keyed("remarks", bare, false, &t), bare);
    assert_eq!(String::from_utf8(p.mask_markup_keyed("mrn", bare, false, &t)).unwrap(), "[PHI:MRN]&#32;");
    // In HTML a tag inside the value is taken out and written back around the mask.
    let out = p.mask_markup_keyed("body", b"<em>219</em>-09-9999!", true, &t);
    assert_eq!(String::from_utf8(out).unwrap(), "<em>[PHI:SSN]</em>!");
}

#[test]
fn a_text_with_many_kinds_of_entity_counts_each() {
    // The whole corpus at once: many kinds of entity, each counted in one call. With more
    // deny-list entities than the table on the stack has room for, the counts go to the heap.
    let deny: Vec<DenyList> = (0..12)
        .map(|i| DenyList { name: format!("CODE_{i}"), terms: vec![format!("zyx{i}q")], case_sensitive: true })
        .collect();
    let det = Arc::new(Detector::new(&[], &deny).unwrap());
    assert!(det.entities().len() > detect::BUILTIN.len() + 11);
    let p = Profile::new(det, ProfileSpec::redact_all("many"), None).unwrap();
    let codes: Vec<String> = (0..12).map(|i| format!("zyx{i}q")).collect();
    let text = format!("{} {}", CORPUS.join("\n"), codes.join(" "));
    let mut want: std::collections::BTreeMap<String, u64> = Default::default();
    for f in p.detector().find_all(text.as_bytes()) {
        *want.entry(p.detector().entities()[f.entity].clone()).or_default() += 1;
    }
    assert!(want.len() > 20 && want.keys().filter(|k| k.starts_with("CODE_")).count() == 12, "{want:?}");
    let t = Tally::default();
    p.mask_text(text.as_bytes(), &t);
    assert_eq!(t.snapshot().into_iter().collect::<std::collections::BTreeMap<_, _>>(), want);
}

#[test]
fn a_buffer_a_large_value_grew_is_not_kept_for_the_next_row() {
    let p = profile();
    let mut values = Values::new(&p);
    assert!(!values.mask(Some("note"), &vec![b'x'; 100_000]), "nothing to mask");
    let buffers = values.finish(&Tally::default());
    assert_eq!(buffers.hay.capacity(), 0, "the 100 KB keyed copy is dropped");
    let mut values = Values::with_buffers(&p, buffers);
    assert!(values.mask(Some("ssn"), b"219-09-9999"));
    let tally = Tally::default();
    let buffers = values.finish(&tally);
    assert!(buffers.hay.capacity() > 0 && buffers.out.capacity() > 0, "small buffers are kept");
    assert_eq!(tally.snapshot().get("SSN"), Some(&1));
}

/// Stray UTF-8 continuation bytes after a finding are masked with it (its span is widened to
/// character boundaries): a stream must wait for the end of their run, wherever it is cut.
#[test]
fn stray_continuation_bytes_after_a_finding_are_judged_whole_in_a_stream() {
    let p = profile();
    for text in [&b"::0\x80\x80\x80"[..], b"call 617-555-0123\x80\x80 now", b"\x00\x00::0\x80\x80\x80\n"] {
        let whole = p.mask_text(text, &Tally::default());
        for cut in 1..text.len() {
            assert_eq!(streamed(&p, text, &[cut]), whole, "text cut at {cut} of {text:?}");
            let markup = |cuts: &[usize]| streamed_with(p.markup_stream(Arc::new(Tally::default()), true), text, cuts);
            assert_eq!(markup(&[cut]), markup(&[]), "markup cut at {cut} of {text:?}");
        }
        let every: Vec<usize> = (1..text.len()).collect();
        assert_eq!(streamed(&p, text, &every), whole, "byte by byte: {text:?}");
    }
}
