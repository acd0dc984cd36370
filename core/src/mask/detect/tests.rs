use super::*;

fn found(text: &str) -> Vec<(String, String)> {
    let d = Detector::new(&[], &[]).unwrap();
    d.find_all(text.as_bytes())
        .into_iter()
        .map(|f| (d.entities()[f.entity].clone(), text[f.start..f.end].to_owned()))
        .collect()
}

fn one(text: &str, entity: &str, value: &str) {
    let got = found(text);
    assert!(got.iter().any(|(e, v)| e == entity && v == value), "{text:?}: expected {entity} {value:?}, got {got:?}");
}

fn none(text: &str) {
    let got = found(text);
    assert!(got.is_empty(), "{text:?}: expected nothing, got {got:?}");
}

#[test]
fn every_builtin_entity_is_found_in_context() {
    one("SSN 123-45-6789 on file", "SSN", "123-45-6789");
    one("ssn: 123456789.", "SSN", "123456789");
    one("call (617) 555-0123 now", "PHONE", "(617) 555-0123");
    one("Fax: +1 617 555 0199", "PHONE", "+1 617 555 0199");
    one("uk +447911123456", "PHONE", "+447911123456");
    one("mail jane.doe+x@mail.example.org.", "EMAIL", "jane.doe+x@mail.example.org");
    one("see https://portal.example.com/p/123?x=1).", "URL", "https://portal.example.com/p/123?x=1");
    one("from 192.168.10.7 and", "IP_ADDRESS", "192.168.10.7");
    one("v6 2001:db8::8a2e:370:7334 ok", "IP_ADDRESS", "2001:db8::8a2e:370:7334");
    one("born 1980-02-29", "DATE", "1980-02-29");
    one("seen 4/17/23", "DATE", "4/17/23");
    one("on April 17, 2023 at", "DATE", "April 17, 2023");
    one("on 17 Apr 2023", "DATE", "17 Apr 2023");
    one("Boston, MA 02115", "ZIP", "02115");
    one("zip 02115-1234", "ZIP", "02115-1234");
    one("MRN: 00123456", "MRN", "00123456");
    one("Medical record number MRN-0099887", "MRN", "MRN-0099887");
    one("Member ID: W123456789", "HEALTH_PLAN", "W123456789");
    one("Account number: 123456789012", "ACCOUNT", "123456789012");
    one("driver's license S12345678", "LICENSE", "S12345678");
    one("card 4111-1111-1111-1111 exp", "CREDIT_CARD", "4111-1111-1111-1111");
    one("NPI 1234567893", "NPI", "1234567893");
    one("dea AB1234563", "DEA", "AB1234563");
    one("IBAN GB82 WEST 1234 5698 7654 32", "IBAN", "GB82 WEST 1234 5698 7654 32");
    one("VIN 1M8GDM9AXKP042788", "VIN", "1M8GDM9AXKP042788");
    one("IMEI 490154203237518", "IMEI", "490154203237518");
    one("mac 00:1A:2B:3C:4D:5E", "MAC_ADDRESS", "00:1A:2B:3C:4D:5E");
    one("lives at 77 Beacon St, Apt 4B near", "STREET_ADDRESS", "77 Beacon St, Apt 4B");
    one("seen by Dr. Emily Chen today", "PERSON", "Emily Chen");
    one("Patient: Zorblat Quux was", "PERSON", "Zorblat Quux");
    one("then Maria Garcia called", "PERSON", "Maria Garcia");
    one(r#"{"patient_name": "Xu Li"}"#, "PERSON", "Xu Li");
}

#[test]
fn look_alikes_are_left_alone() {
    none("card 4111 1111 1111 1112 declined");
    none("SSN 666-12-3456 is invalid, so is 000-12-3456");
    none("version 1.2.3.4.5 and v2.3.1");
    none("at 10:30 and 14:05:22");
    none("CPT 99213 billed, 500 mg, BP 120/80, HbA1c 7.2%");
    none("take 1/2 tablet in 2019");
    none("The Patient is Stable");
    none("order 12345 shipped");
}

#[test]
fn custom_and_deny_list_entities_come_first() {
    let custom = [CustomEntity { name: "EMPLOYEE_ID".into(), pattern: r"\bE\d{6}\b".into(), confidence: 0.9 }];
    let deny = [DenyList { name: "PROJECT".into(), terms: vec!["Bluebird".into()], case_sensitive: false }];
    let d = Detector::new(&custom, &deny).unwrap();
    let text = b"E123456 works on BLUEBIRD";
    let got: Vec<&str> = d.find_all(text).iter().map(|f| d.entities()[f.entity].as_str()).collect();
    assert_eq!(got, ["EMPLOYEE_ID", "PROJECT"]);
    let bad = [CustomEntity { name: "BAD".into(), pattern: "(".into(), confidence: 1.0 }];
    let err = Detector::new(&bad, &[]).unwrap_err().to_string();
    assert!(err.contains("BAD"), "{err}");
}

#[test]
fn a_position_is_live_only_while_a_match_could_still_grow() {
    let d = Detector::new(&[], &[]).unwrap();
    let mut cache = d.live_cache();
    let text = b"ok. SSN 123-45-67";
    let p = d.live_from(&mut cache, text, 0, 1024);
    assert!(p <= 8, "the SSN (and its keyword) must be held, got {p}");
    let done = b"ok. nothing here. ";
    assert_eq!(d.live_from(&mut cache, done, 0, 1024), done.len());
}

/// The scan as first written: one leftmost-first search from where the last finding ended, and
/// on a refused match every other pattern retried anchored at its start. The optimized scan must
/// give exactly this answer.
fn scan_reference(d: &Detector, hay: &[u8]) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < hay.len() {
        let Some(m) = d.all.search(&Input::new(hay).range(at..)) else { break };
        let first = m.pattern().as_usize();
        let mut found = d.accept(hay, first, m.start(), m.end());
        for pid in (0..d.patterns.len()).filter(|&p| p != first) {
            if found.is_some() {
                break;
            }
            let input = Input::new(hay).range(m.start()..).anchored(Anchored::Pattern(pattern_id(pid)));
            if let Some(m2) = d.all.search(&input) {
                found = d.accept(hay, pid, m2.start(), m2.end());
            }
        }
        match found {
            Some(f) => {
                at = f.match_end.max(m.start() + 1);
                out.push(f);
            }
            None => at = m.start() + 1,
        }
    }
    out
}

/// Pieces of text that start, end, nearly make or break matches.
const PIECES: &[&str] = &[
    "123-45-6789",
    "666-12-3456",
    "4111 1111 1111 1111",
    "4111111111111112",
    "1234567893",
    "AB1234563",
    "490154203237518",
    "GB82 WEST 1234 5698 7654 32",
    "1M8GDM9AXKP042788",
    "10.0.0.12",
    "2001:db8::1",
    "::",
    "fe80::1%",
    "00:1A:2B:3C:4D:5E",
    "001a.2b3c.4d5e",
    "aa-bb-cc-dd-ee-ff",
    "02115",
    "MA",
    "02115-1234",
    "(617) 555-0123",
    "+1 617 555 0123",
    "+447911123456",
    "john.smith",
    "@",
    "example.org",
    "https://",
    "www.",
    "ehr.example.com/p?x=1",
    "04/17/1962",
    "1985-03-12T10:30:00Z",
    "April 17, 2023",
    "17th of March 1999",
    "Dr.",
    "Ms",
    "Mr. ",
    "John",
    "Smith",
    "Maria Garcia",
    "Emily",
    "Chen",
    "O'Brien",
    "McDonald",
    "The",
    "Hospital",
    "patient",
    "Patient:",
    "name",
    "my name is",
    "i'm",
    "it's",
    "this is",
    "hi",
    "thanks,",
    "seen by",
    "MRN",
    "mrn:",
    "Member ID",
    "account number",
    "acct #",
    "driver's license",
    "ssn",
    "SSN:",
    "npi",
    "imei",
    "cert.",
    "policy",
    "77 Beacon St",
    "Apt 4B",
    "Street",
    "café",
    "日本",
    "✓",
    "v1.2.3.4.5",
    "10:30",
    "500 mg",
    "x",
    "-",
    ".",
    ",",
    ":",
    "\"",
    "'",
    "=",
    "#",
    "(",
    ")",
    "\n",
    "\t",
    " ",
    "  ",
    "0",
    "9",
    "12",
    "123",
    "1234",
    "12345",
    "A",
    "Z9",
    "Plan",
    "Seen",
    "reports",
    "stable.",
    "My",
    "Hello",
    "Thanks",
    "Emergency contact",
    "april",
    "member id",
    "on my card is",
    "Well",
    "john",
    "smith",
    "Patient reports",
    "Name",
    "Is",
    "Dear",
    "wife",
    "www.example.org",
    "Mary",
    "%",
    "+",
    "_",
    ".j.doe@mail.example.org",
    "-x_y%z@example.org",
    "a.b",
];

/// The built-in detector with the smallest cache its scout DFA can have: the cache is cleared
/// again and again, so states kept from one search to the next go stale.
fn small_cache_detector() -> Detector {
    let mut d = Detector::new(&[], &[]).unwrap();
    let regexes: Vec<&str> = d.patterns.iter().map(|p| p.regex.as_str()).collect();
    let config = regex_automata::hybrid::dfa::Config::new().cache_capacity(0).skip_cache_capacity_check(true);
    let dfa = super::super::scout::build_dfa_with(&regexes, syntax_config(), config).unwrap();
    let for_pool = dfa.clone();
    d.scout = Some((dfa, Pool::new(Box::new(move || for_pool.create_cache()) as CacheFn)));
    d
}

proptest::proptest! {
    /// Values behind one key's prefix, scanned with the prefix's memo kept from one to the next
    /// (and across two caches, which the memo must tell apart), find what the scan of each
    /// whole text finds.
    #[test]
    fn a_scan_behind_a_remembered_prefix_equals_the_whole_scan(
        key in proptest::collection::vec(0..PIECES.len(), 1..4),
        values in proptest::collection::vec((proptest::collection::vec(0..PIECES.len(), 0..8), proptest::bool::ANY), 1..6),
    ) {
        static D: std::sync::LazyLock<Detector> = std::sync::LazyLock::new(|| Detector::new(&[], &[]).unwrap());
        static SMALL: std::sync::LazyLock<Detector> = std::sync::LazyLock::new(small_cache_detector);
        let prefix: String = key.iter().map(|&i| PIECES[i]).collect::<Vec<_>>().join(" ") + ": ";
        for d in [&*D, &*SMALL] {
            let (mut memo, mut one, mut other) = (KeyMemo::default(), Caches::default(), Caches::default());
            for (value, switch) in &values {
                let text = prefix.clone() + &value.iter().map(|&i| PIECES[i]).collect::<String>();
                let hay = text.as_bytes();
                let mut whole = Vec::new();
                D.scan_text(hay, &mut whole, &mut Caches::default());
                let mut keyed = Vec::new();
                d.scan_keyed(hay, prefix.len(), &mut keyed, if *switch { &mut other } else { &mut one }, &mut memo);
                proptest::prop_assert_eq!(&keyed, &whole, "{:?}", text);
            }
        }
    }

    /// Long texts where clean stretches and dense ones take turns: the scan moves between the
    /// scout and the search without it (by its look at the bytes ahead and after short
    /// windows) and still finds what the reference scan finds.
    #[test]
    fn a_long_text_of_clean_and_dense_stretches_scans_as_the_reference(
        parts in proptest::collection::vec((proptest::bool::ANY, proptest::collection::vec(0..PIECES.len(), 1..40)), 1..6),
    ) {
        static D: std::sync::LazyLock<Detector> = std::sync::LazyLock::new(|| Detector::new(&[], &[]).unwrap());
        let clean = "the patient reports mild pain after the procedure and was advised to rest. ";
        let mut text = String::new();
        for (sparse, picks) in parts {
            if sparse {
                text.push_str(&clean.repeat(12));
            }
            for i in picks {
                text.push_str(PIECES[i]);
                text.push(' ');
            }
        }
        let hay = text.as_bytes();
        let mut found = Vec::new();
        D.scan(hay, 0, hay.len(), &mut found);
        proptest::prop_assert_eq!(&found, &scan_reference(&D, hay), "{:?}", text);
    }

    #[test]
    fn the_scan_equals_the_reference_scan(picks in proptest::collection::vec((0..PIECES.len(), 0usize..4), 1..40)) {
        static D: std::sync::LazyLock<Detector> = std::sync::LazyLock::new(|| Detector::new(&[], &[]).unwrap());
        let mut text = String::new();
        for (i, sep) in picks {
            text.push_str(PIECES[i]);
            text.push_str([" ", "", ", ", "\n"][sep]);
        }
        let hay = text.as_bytes();
        let reference = scan_reference(&D, hay);
        let mut found = Vec::new();
        D.scan(hay, 0, hay.len(), &mut found);
        proptest::prop_assert_eq!(&found, &reference, "{:?}", text);
        let mut scouted = Vec::new();
        D.scan_with(hay, 0..hay.len(), &mut scouted, (0, u32::MAX), true, &mut Caches::default());
        proptest::prop_assert_eq!(&scouted, &reference, "scouted: {:?}", text);
        // Short texts take the anchored search (above); so do dense stretches of long ones.
        let mut anchored = Vec::new();
        D.scan_with(hay, 0..hay.len(), &mut anchored, (usize::MAX, 0), true, &mut Caches::default());
        proptest::prop_assert_eq!(D.finds_nothing(hay), reference.is_empty(), "{:?}", text);
        proptest::prop_assert_eq!(&anchored, &reference, "anchored: {:?}", text);
        // The hand-driven anchored search answers as the library's does, at every place and
        // for every end of the span (a `\b` at the end is settled by the byte after it).
        // Ours runs first, on a cache of its own that starts empty, so that it meets
        // transitions not built yet.
        let (dfa, pool) = D.scout_parts();
        let (mut cache, mut own) = (pool.get(), dfa.create_cache());
        for start in 0..hay.len() {
            for end in [hay.len(), (start + 7).min(hay.len())] {
                let ours = anchored_match(dfa, &mut own, hay, start..end, Anchored::Yes);
                let input = Input::new(hay).range(start..end).anchored(Anchored::Yes);
                let library = dfa.try_search_fwd(&mut cache, &input).map(|m| m.map(|m| (m.offset(), m.pattern().as_usize())));
                proptest::prop_assert_eq!(ours, library.map_err(|_| ()), "at {}..{} of {:?}", start, end, text);
                let any = has_anchored_match(dfa, &mut own, hay, start..end, Anchored::Yes);
                proptest::prop_assert_eq!(any, ours.map(|m| m.is_some()), "any match at {}..{} of {:?}", start, end, text);
            }
        }
        // Anchored at one pattern (the split halves), the answer names that pattern without a
        // lookup: still the library's.
        let splits = D.splits.as_ref().unwrap();
        let (mut own, mut lib) = (splits.before.create_cache(), splits.before.create_cache());
        for start in 0..hay.len() {
            for p in 0..splits.before.pattern_len() {
                let one = Anchored::Pattern(pattern_id(p));
                let ours = anchored_match(&splits.before, &mut own, hay, start..hay.len(), one);
                let input = Input::new(hay).range(start..).anchored(one);
                let library = splits.before.try_search_fwd(&mut lib, &input).map(|m| m.map(|m| (m.offset(), m.pattern().as_usize())));
                proptest::prop_assert_eq!(ours, library.map_err(|_| ()), "pattern {} at {} of {:?}", p, start, text);
            }
        }
        // The value found without captures (by a split search, or the whole match when the
        // group is the whole pattern) is the one the capture group reports.
        for (pid, p) in D.patterns.iter().enumerate() {
            let alone = &D.alone[pid];
            if alone.group_info().to_index(regex_automata::PatternID::ZERO, "v").is_none() {
                continue;
            }
            for caps in alone.captures_iter(hay) {
                let (Some(m), Some(v)) = (caps.get_match(), caps.get_group_by_name("v")) else { continue };
                let ours = if p.has_value { D.value_span(pid, hay, m.start(), m.end()) } else { (m.start(), m.end()) };
                proptest::prop_assert_eq!(ours, (v.start, v.end), "pattern {} in {:?}", pid, text);
            }
        }
    }
}

#[test]
fn every_builtin_value_pattern_splits_without_captures() {
    let d = Detector::new(&[], &[]).unwrap();
    for p in d.patterns.iter().filter(|p| p.has_value) {
        assert!(p.split.is_some(), "{} does not split", p.regex);
    }
    assert_eq!(split_at_value(r"a|b(?P<v>c)"), None);
    // More after the value than a `\b`: the value does not end where the match does.
    assert_eq!(split_at_value(r"id=(?P<v>\d+);"), None);
    assert_eq!(split_at_value(r"id=(?P<v>\d+)\b"), Some(("id=".into(), r"\d+\b".into())));
    assert_eq!(split_at_value(r"(?:a(?P<v>c))"), None);
    assert_eq!(
        split_at_value(r"(?i)k[(]:\s*(?P<v>[a-z)]+)\b"),
        Some((r"(?i)k[(]:\s*".into(), r"(?i)[a-z)]+\b".into()))
    );
}

/// The letters of `regex` that match literally (outside classes, escapes and group syntax), in
/// runs, lower case.
fn literal_fragments(regex: &str) -> Vec<String> {
    let b = regex.as_bytes();
    let (mut out, mut word, mut class, mut i) = (Vec::new(), String::new(), false, 0);
    while i < b.len() {
        let c = b[i];
        let mut flush = !c.is_ascii_alphabetic() || class;
        match c {
            b'\\' => i += 1,
            b'[' if !class => class = true,
            b']' if class => class = false,
            b'(' if b.get(i + 1) == Some(&b'?') => {
                while i < b.len() && !matches!(b[i], b':' | b')' | b'>') {
                    i += 1;
                }
            }
            _ if class => {}
            _ if c.is_ascii_alphabetic() => {
                word.push(char::from(c.to_ascii_lowercase()));
                flush = false;
            }
            _ => {}
        }
        if flush && !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        i += 1;
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

#[test]
fn phrase_words_cover_every_keyword_cue_and_month_literal() {
    assert_eq!(literal_fragments(r"(?i)\b(?:mrn|med\.?\s*rec)[a-z]{2}(?P<v>\d)"), ["mrn", "med", "rec"]);
    let words = crate::mask::scout::PHRASE_WORDS;
    for p in builtin_patterns() {
        // What comes before the value of a keyword, cue or title pattern, and written dates.
        let text = match p.regex.find("(?P<v>") {
            Some(at) => &p.regex[..at],
            None if p.regex.contains("jan(?:uary)?") => p.regex.as_str(),
            None => continue,
        };
        for fragment in literal_fragments(text) {
            assert!(
                words.iter().any(|w| w.contains(fragment.as_str())),
                "{fragment:?} (in {}) is in no phrase word: the scout's walk-back would stop at it",
                p.regex
            );
        }
    }
}

#[test]
fn a_cue_before_a_title_finds_the_name_as_sure_as_the_title() {
    let d = Detector::new(&[], &[]).unwrap();
    for (text, name) in
        [("seen by Dr. Zorblat today", "Zorblat"), ("Dr. Zorblat today", "Zorblat"), ("Thanks, Mrs Quux", "Quux")]
    {
        let got = d.find_all(text.as_bytes());
        assert_eq!(got.len(), 1, "{text:?}: {got:?}");
        assert_eq!(&text[got[0].start..got[0].end], name, "{text:?}");
        assert!(got[0].confidence >= TITLE_CONFIDENCE, "{text:?}: {got:?}");
    }
    // A cue with a title and no name after it finds nothing.
    assert!(d.find_all(b"seen by Dr. today").is_empty());
}

#[test]
fn a_value_group_around_the_whole_pattern_is_the_match() {
    for whole in [r"\b(?P<v>[A-Z][a-z]+ [A-Z][a-z]+)\b", r"(?i)\b(?P<v>a(b|c)d)\b", r"(?P<v>x\))", r"(?P<v>x\\)\b"] {
        assert!(value_is_whole(whole), "{whole}");
    }
    for not in [r"\bmrn:\s*(?P<v>\d+)\b", r"\b(?P<v>\d+)-\d+", r"(?P<v>a)(b)", r"(?P<v>x)\\b", r"(?P<v>a)|b"] {
        assert!(!value_is_whole(not), "{not}");
    }
    // The name pair's value is the match, found without a second search.
    let d = Detector::new(&[], &[]).unwrap();
    let pair = d.patterns.iter().find(|p| matches!(p.check, Check::NamePair)).unwrap();
    assert!(!pair.has_value, "the name pair searches for its value");
    one("Seen with Maria Garcia today.", "PERSON", "Maria Garcia");
}

#[test]
fn split_values_are_where_a_capturing_search_puts_them() {
    let d = Detector::new(&[], &[]).unwrap();
    let texts = [
        "MRN: 12345-AB, medical record number A-99881 and chart 7788123",
        "Member ID 99887766; policy no. XZ-44321; group # 55501",
        "acct# 12345678, a/c 99-8877-66, bank account: 3344556677",
        "DL: D1234567, driver's license A12345678, lic. 55-66-77",
        "SSN: 219099999, social security no. 078051120, ss# 219099999",
        "NPI 1234567893 and imei: 490154203237518",
        "Seen by Dr. Maria Garcia; patient name: Quentin Zed; Dear Mrs. Ann B. Lee,",
        r#"{"patient_name":"Quentin Zed","mrn":"A-12345","note":"attending: Dr. John Smith"}"#,
        "my name is Jane Doe and I am Robert O. Brown",
        "certificate 44-1234, birth certificate: BC-99812",
    ];
    let split: Vec<usize> = (0..d.patterns.len()).filter(|&p| d.patterns[p].split.is_some()).collect();
    assert!(split.len() >= 8, "the built-in keyword patterns are split: {split:?}");
    let mut checked = 0;
    for &pid in &split {
        let alone = &d.alone[pid];
        let mut caps = alone.create_captures();
        for text in texts {
            let hay = text.as_bytes();
            for m in alone.find_iter(hay) {
                let input = Input::new(hay).range(m.start()..m.end()).anchored(Anchored::Yes);
                alone.search_captures(&input, &mut caps);
                let want = caps.get_group_by_name("v").map_or((m.start(), m.end()), |s| (s.start, s.end));
                assert_eq!(d.value_span(pid, hay, m.start(), m.end()), want, "pattern {pid} in {text:?}");
                // …and it was the split search that answered, not the capturing fallback.
                let (splits, one) = (d.splits.as_ref().unwrap(), Anchored::Pattern(d.patterns[pid].split.unwrap()));
                let mut caches = splits.caches.get();
                let (bc, vc) = &mut *caches;
                let before = anchored_match(&splits.before, bc, hay, m.start()..m.end(), one);
                assert_eq!(before, Ok(Some((want.0, d.patterns[pid].split.unwrap().as_usize()))), "{text:?}");
                let value = anchored_match(&splits.value, vc, hay, want.0..m.end(), one);
                assert_eq!(value.map(|v| v.map(|v| v.0)), Ok(Some(m.end())), "{text:?}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} matches compared");
}

#[test]
fn a_match_found_before_the_cache_is_cleared_keeps_its_pattern() {
    // `x` matches at once (pattern 1); the search goes on through a new state per letter, looking
    // for the longer match, until the cache is full and cleared, and then dies at `!`.
    let dfa = DFA::builder()
        .configure(DFA::config().match_kind(MatchKind::LeftmostFirst).cache_capacity(0).skip_cache_capacity_check(true))
        .build_many(&["q", "x(?:[a-z]{0,3000}y)?"])
        .unwrap();
    // Up to the match and the byte after it, the cache holds: every clear comes after.
    let mut cache = dfa.create_cache();
    assert_eq!(anchored_match(&dfa, &mut cache, b"xa!", 0..3, Anchored::Yes), Ok(Some((1, 1))));
    assert_eq!(cache.clear_count(), 0);
    let mut cache = dfa.create_cache();
    let hay = format!("x{}!", "ab".repeat(1400));
    let found = anchored_match(&dfa, &mut cache, hay.as_bytes(), 0..hay.len(), Anchored::Yes);
    assert!(cache.clear_count() > 0, "the cache was never cleared: the test proves nothing");
    assert_eq!(found, Ok(Some((1, 1))));
}

#[test]
fn a_custom_value_followed_by_more_is_only_the_value() {
    let custom = [CustomEntity { name: "BADGE".into(), pattern: r"badge=(?P<v>\d+);".into(), confidence: 0.9 }];
    let d = Detector::new(&custom, &[]).unwrap();
    let text = b"see badge=4417; today";
    let got = d.find_all(text);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(&text[got[0].start..got[0].end], b"4417");
}

#[test]
fn name_words_are_the_words_split_whitespace_finds() {
    let flags = |w: &str| NAME_WORDS.get(w.as_bytes()).copied().unwrap_or(0);
    for text in ["Maria Garcia", "Ann B. Lee", " Xu\tLi\r\n", "The\x0bSmith", "Zorblat\x0cQuux", "Quux", "", " \t "] {
        let words: Vec<&str> = text.split_whitespace().collect();
        let want = words.first().map(|&first| {
            let last = words.last().map_or(0, |&w| flags(w));
            (flags(first), last, words.len() > 1, words.iter().any(|&w| flags(w) & NOT_A_NAME != 0))
        });
        assert_eq!(name_words(text.as_bytes()), want, "{text:?}");
    }
    assert_eq!(name_words(b"Maria Garcia"), Some((FIRST_NAME, LAST_NAME, true, false)));
    assert_eq!(name_words(b"The Smith").map(|w| w.3), Some(true));
}

#[test]
fn text_looks_dense_by_its_share_of_bytes_the_scout_stops_at() {
    assert!(!looks_dense(b"Patient reports mild pain after the procedure and was advised to rest. "));
    assert!(looks_dense(b"MRN 00123456, DOB 01/02/1980, call 617-555-0123"));
    // One in six is dense; one fewer is not.
    assert!(looks_dense(b"ab:cdeAbcdef"));
    assert!(!looks_dense(b"abcdeAbcdefg"));
    assert!(looks_dense(b"x@y.zz"));
    assert!(!looks_dense(b""), "an empty text is not dense");
}
