//! Masking throughput: PHI-dense JSON records and clean clinical prose, masked with a profile
//! that redacts every entity. The anchor, measured in the same run over the same bytes, is a
//! `memchr::memmem` search for a string that is not there — one pass at memory speed, the
//! floor any scanner is measured against. BENCHMARKS.md reports MB/s and the ratio.
#![expect(clippy::unwrap_used, reason = "a benchmark whose set-up fails should stop loudly")]

use std::sync::Arc;

use airlock::mask::{Detector, Profile, ProfileSpec, Tally};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// The gateway's allocator (see `core/src/main.rs`), so the numbers are the ones it runs at.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A small deterministic generator (xorshift), so every run masks the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b'0' + (self.next() % 10) as u8)).collect()
    }
}

const FIRST: &[&str] = &["Maria", "James", "Linda", "Robert", "Aisha", "Chen", "Olivia", "Mohammed"];
const LAST: &[&str] = &["Garcia", "Smith", "Johnson", "Nguyen", "Patel", "Brown", "Lopez", "Miller"];
const WORDS: &[&str] = &[
    "patient",
    "reports",
    "mild",
    "pain",
    "after",
    "the",
    "procedure",
    "and",
    "was",
    "advised",
    "to",
    "continue",
    "current",
    "medication",
    "follow",
    "up",
    "in",
    "two",
    "weeks",
    "vitals",
    "stable",
    "no",
    "acute",
    "distress",
    "review",
    "of",
    "systems",
    "negative",
    "plan",
    "discussed",
    "with",
    "family",
    "tolerating",
    "diet",
    "well",
];

/// One patient record's fields, in order: a name, an SSN, a phone number, an e-mail address,
/// a date of birth, an MRN and a note that mentions a card number.
fn record(r: &mut Rng) -> [(&'static str, String); 7] {
    let (f, l) = (r.pick(FIRST), r.pick(LAST));
    let ssn = format!("{}-{}-{}", 100 + r.next() % 600, 10 + r.next() % 89, 1000 + r.next() % 8999);
    let phone = format!("(617) 555-{}", r.digits(4));
    let email = format!("{}.{}@example.org", f.to_lowercase(), l.to_lowercase());
    let dob = format!("19{}-0{}-1{}", 50 + r.next() % 49, 1 + r.next() % 9, r.next() % 10);
    let mrn = format!("MRN-{}", r.digits(8));
    let note = format!("Seen by Dr. {l}; card 4111 1111 1111 1111 on file, call back at 617-555-{}.", r.digits(4));
    [
        ("patient_name", format!("{f} {l}")),
        ("ssn", ssn),
        ("phone", phone),
        ("email", email),
        ("dob", dob),
        ("mrn", mrn),
        ("note", note),
    ]
}

/// About `size` bytes of JSON records (see [`record`]), each with an `id`.
fn phi_json(size: usize) -> Vec<u8> {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = String::from("[");
    let mut id = 0;
    while out.len() < size {
        id += 1;
        out.push_str(&format!(r#"{{"id":{id}"#));
        for (key, value) in record(&mut r) {
            out.push_str(&format!(r#","{key}":"{value}""#));
        }
        out.push_str("},");
    }
    out.pop();
    out.push(']');
    out.into_bytes()
}

/// About `size` bytes of psql's aligned output of the records of [`phi_json`] (what a database
/// tool hands an agent): a header, a rule, and a row per record (cells not padded to width).
fn psql_table(size: usize) -> Vec<u8> {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = String::new();
    let mut id = 0;
    while out.len() < size {
        id += 1;
        let fields = record(&mut r);
        if id == 1 {
            let names: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
            out.push_str(&format!(" id | {}\n", names.join(" | ")));
            let rule: Vec<String> = names.iter().map(|n| "-".repeat(n.len() + 2)).collect();
            out.push_str(&format!("----+{}\n", rule.join("+")));
        }
        let values: Vec<&str> = fields.iter().map(|(_, v)| v.as_str()).collect();
        out.push_str(&format!(" {id} | {}\n", values.join(" | ")));
    }
    out.push_str(&format!("({id} rows)\n"));
    out.into_bytes()
}

/// About `size` bytes of clinical prose with no identifier in it, all lower case.
fn clean_text(size: usize) -> Vec<u8> {
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    let mut out = String::new();
    while out.len() < size {
        let n = 8 + r.next() % 12;
        for i in 0..n {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(r.pick(WORDS));
        }
        out.push_str(". ");
    }
    out.into_bytes()
}

/// Clinical prose as written: sentences start with a capital, and every third one gives a dose
/// or a reading (`500 mg`, `BP 120/80`). Still no identifier.
fn clean_prose(size: usize) -> Vec<u8> {
    let mut r = Rng(0x5851_f42d_4c95_7f2d);
    let mut out = String::new();
    let mut sentence = 0;
    while out.len() < size {
        sentence += 1;
        let n = 8 + r.next() % 12;
        for i in 0..n {
            let w = r.pick(WORDS);
            if i == 0 {
                out.push_str(&w[..1].to_uppercase());
                out.push_str(&w[1..]);
            } else {
                out.push(' ');
                out.push_str(w);
            }
        }
        match sentence % 6 {
            0 => out.push_str(&format!(", {} mg", 100 + r.next() % 900)),
            3 => out.push_str(&format!(", BP {}/{}", 100 + r.next() % 60, 60 + r.next() % 30)),
            _ => {}
        }
        out.push_str(". ");
    }
    out.into_bytes()
}

/// About `size` bytes of an HTML page of clean prose (see [`clean_prose`]) with inline markup:
/// a styled span, a link, an emphasis or a comment every few words. Still no identifier.
fn clean_html(size: usize) -> Vec<u8> {
    let prose = String::from_utf8(clean_prose(size)).unwrap();
    let mut r = Rng(0x1405_7b7e_f767_814f);
    let mut out = String::from("<!doctype html><html><body><p>");
    for (i, word) in prose.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        match r.next() % 8 {
            0 => out.push_str(&format!("<span class=\"t-{} hl\">{word}</span>", r.next() % 9)),
            1 => out.push_str(&format!("<a href=\"/notes/{}\" title=\"note\">{word}</a>", r.next() % 1000)),
            2 => out.push_str(&format!("<em>{word}</em>")),
            3 => out.push_str(&format!("{word}<!-- r{} -->", r.next() % 100)),
            _ => out.push_str(word),
        }
        if word.ends_with('.') && r.next().is_multiple_of(4) {
            out.push_str("</p>\n<p>");
        }
    }
    out.push_str("</p></body></html>");
    out.into_bytes()
}

fn profile() -> Arc<Profile> {
    let det = Arc::new(Detector::new(&[], &[]).unwrap());
    let spec = ProfileSpec { min_confidence: 0.5, ..ProfileSpec::redact_all("bench") };
    Arc::new(Profile::new(det, spec, None).unwrap())
}

fn bench(c: &mut Criterion) {
    let p = profile();
    let json = phi_json(256 * 1024);
    let text = clean_text(256 * 1024);
    let prose = clean_prose(256 * 1024);
    let html = clean_html(256 * 1024);
    let table = psql_table(256 * 1024);
    for clean in [&text, &prose] {
        assert_eq!(&p.mask_text(clean, &Tally::default()), clean, "the clean inputs must hold no finding");
    }
    let mut page = p.markup_stream(Arc::new(Tally::default()), true);
    let mut out: Vec<u8> = html.chunks(4096).flat_map(|c| page.push(c)).collect();
    out.extend(page.finish());
    assert_eq!(out, html, "the clean page must hold no finding");
    let inputs = [
        ("phi_json", &json),
        ("psql_table", &table),
        ("clean_text", &text),
        ("clean_prose", &prose),
        ("clean_html", &html),
    ];
    for (name, input) in inputs {
        let mut g = c.benchmark_group(format!("mask/{name}"));
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function("anchor_memmem_scan", |b| {
            let finder = memchr::memmem::Finder::new(b"\x00never-there\x00");
            b.iter(|| finder.find(std::hint::black_box(input)))
        });
        g.bench_function("mask_text", |b| b.iter(|| p.mask_text(std::hint::black_box(input), &Tally::default())));
        if name == "phi_json" {
            g.bench_function("mask_json_document", |b| {
                b.iter(|| airlock::mask::json::mask_document(&p, std::hint::black_box(input), &Tally::default()))
            });
        }
        if name == "phi_json" {
            // Many short responses (2 KiB each) streamed in 64-byte pieces, as an LLM's
            // deltas arrive: each response is a new stream.
            g.bench_function("responses_2k_in_64b_pieces", |b| {
                b.iter(|| {
                    let tally = Arc::new(Tally::default());
                    let mut n = 0;
                    for response in input.chunks(2048) {
                        let mut s = p.stream(tally.clone());
                        for piece in response.chunks(64) {
                            n += s.push(piece).len();
                        }
                        n += s.finish().len();
                    }
                    n
                })
            });
        }
        for (id, markup) in [("stream_4k_chunks", false), ("markup_4k_chunks", true)] {
            g.bench_function(id, |b| {
                b.iter(|| {
                    let tally = Arc::new(Tally::default());
                    let mut s = if markup { p.markup_stream(tally, true) } else { p.stream(tally) };
                    let mut n = 0;
                    for chunk in input.chunks(4096) {
                        n += s.push(chunk).len();
                    }
                    n + s.finish().len()
                })
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
