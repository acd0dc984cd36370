//! Skipping text where no built-in entity can start.
//!
//! The detector's leftmost-first search runs a lazy DFA over every byte. Most of a clinical note
//! or a chat reply is lowercase words, spaces and punctuation, where nothing can match. The scout
//! drives its own copy of that DFA and, whenever the DFA is idle (in a start state: no match in
//! flight), jumps to the next *trigger* — a byte every accepted built-in finding contains — less
//! a *walk-back* that reaches the earliest byte where a finding containing that trigger could
//! start. Only when the DFA reaches a match state does the detector run its full search, from the
//! window where the scout started.
//!
//! Triggers: ASCII digits, capital letters, `@`, `:`, and a `.` after `www`. Every accepted
//! built-in finding holds one (names start with a capital, an all-letter MAC address is refused,
//! context-keyword values must hold a digit). The walk-back from a trigger covers the run of
//! e-mail-local-part bytes around it (`john.smith@`, `fe80:`, `(617`), then repeatedly the
//! punctuation or spaces before it and, when it is one of the words that keywords and name cues
//! are made of (`member`, `id`, `on`, `my`, `card`, `is`, `seen`, `by`, months…), that word too.
//! It stops at any other word, so a capital at the start of a sentence opens a window of a few
//! bytes. Custom and deny-list entities may match anything; a detector with any of them does not
//! scout.
//!
//! The scan with the scout gives exactly the answer of the scan without it; a property test in
//! `detect/tests.rs` compares the two.

use std::collections::HashSet;
use std::sync::LazyLock;

use regex_automata::Input;
use regex_automata::hybrid::dfa::{Cache, DFA};

/// Words that keyword and name-cue phrases are made of, lower case.
const PHRASE_WORDS: &[&str] = &[
    // Identifier keywords and what may follow them.
    "mrn",
    "medical",
    "record",
    "records",
    "med",
    "rec",
    "chart",
    "member",
    "subscriber",
    "beneficiary",
    "insurance",
    "health",
    "plan",
    "policy",
    "group",
    "medicaid",
    "medicare",
    "account",
    "acct",
    "a",
    "c",
    "bank",
    "certificate",
    "cert",
    "birth",
    "death",
    "driver",
    "drivers",
    "s",
    "license",
    "licence",
    "dl",
    "lic",
    "ssn",
    "social",
    "security",
    "ss",
    "npi",
    "imei",
    "number",
    "num",
    "nbr",
    "no",
    "id",
    "on",
    "my",
    "the",
    "your",
    "card",
    "is",
    // Name cues.
    "patient",
    "pt",
    "name",
    "full",
    "first",
    "last",
    "legal",
    "preferred",
    "nick",
    "fullname",
    "firstname",
    "lastname",
    "legalname",
    "preferredname",
    "nickname",
    "patientname",
    "seen",
    "attending",
    "physician",
    "provider",
    "nurse",
    "caregiver",
    "guardian",
    "spouse",
    "mother",
    "father",
    "son",
    "daughter",
    "wife",
    "husband",
    "signed",
    "referred",
    "by",
    "contact",
    "emergency",
    "it",
    "its",
    "this",
    "i",
    "im",
    "m",
    "am",
    "call",
    "me",
    "thanks",
    "thank",
    "you",
    "hi",
    "hello",
    "dear", // Months, before a day and year.
    "jan",
    "january",
    "feb",
    "february",
    "mar",
    "march",
    "apr",
    "april",
    "may",
    "jun",
    "june",
    "jul",
    "july",
    "aug",
    "august",
    "sep",
    "sept",
    "september",
    "oct",
    "october",
    "nov",
    "november",
    "dec",
    "december", // URLs.
    "http",
    "https",
    "www",
];

static PHRASE: LazyLock<HashSet<&'static [u8]>> = LazyLock::new(|| PHRASE_WORDS.iter().map(|w| w.as_bytes()).collect());

/// Bytes of an e-mail local part (and so of anything the detectors glue together).
fn is_run(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_trigger(hay: &[u8], t: usize) -> bool {
    match hay[t] {
        b'0'..=b'9' | b'A'..=b'Z' | b'@' | b':' => true,
        b'.' => t >= 3 && hay[t - 3..t].eq_ignore_ascii_case(b"www"),
        _ => false,
    }
}

/// A byte that may be a trigger: a digit, `:`, `@`, a capital or a `.`. Branch-free, so the
/// block test below compiles to vector compares.
fn maybe_trigger(b: u8) -> bool {
    (b.wrapping_sub(b'0') <= b':' - b'0') | (b.wrapping_sub(b'@') <= b'Z' - b'@') | (b == b'.')
}

/// The next trigger at or after `from`.
fn next_trigger(hay: &[u8], from: usize) -> Option<usize> {
    const BLOCK: usize = 32;
    let mut at = from;
    while at < hay.len() {
        let end = (at + BLOCK).min(hay.len());
        if hay[at..end].iter().fold(false, |any, &b| any | maybe_trigger(b))
            && let Some(t) = (at..end).find(|&t| is_trigger(hay, t))
        {
            return Some(t);
        }
        at = end;
    }
    None
}

/// The earliest byte (not before `floor`) where a finding whose first trigger is `t` could start.
fn walk_back(hay: &[u8], t: usize, floor: usize) -> usize {
    let mut p = t;
    while p > floor && is_run(hay[p - 1]) {
        p -= 1;
    }
    loop {
        // Punctuation and spaces, then the word before them if a phrase is made of it.
        while p > floor && hay[p - 1].is_ascii() && !hay[p - 1].is_ascii_alphanumeric() {
            p -= 1;
        }
        let end = p;
        let mut start = p;
        while start > floor && hay[start - 1].is_ascii_alphanumeric() {
            start -= 1;
        }
        let word = &hay[start..end];
        let mut lower = [0_u8; 16];
        if word.is_empty() || word.len() > lower.len() {
            return end;
        }
        lower[..word.len()].copy_from_slice(word);
        lower[..word.len()].make_ascii_lowercase();
        if !PHRASE.contains(&lower[..word.len()]) {
            return end;
        }
        p = start;
    }
}

/// What a scout run found.
pub(crate) enum Scouted {
    /// A match starts at or after this position (and before the DFA's match state).
    From(usize),
    /// No match starts in `from..until`.
    Nothing,
}

/// The unanchored DFA over every pattern, with its start states tagged.
pub(crate) fn build_dfa(
    regexes: &[&str],
    syntax: regex_automata::util::syntax::Config,
) -> Result<DFA, Box<regex_automata::hybrid::BuildError>> {
    DFA::builder()
        .syntax(syntax)
        .configure(
            DFA::config()
                .match_kind(regex_automata::MatchKind::LeftmostFirst)
                .specialize_start_states(true)
                .cache_capacity(64 << 20),
        )
        .thompson(
            regex_automata::nfa::thompson::Config::new()
                .which_captures(regex_automata::nfa::thompson::WhichCaptures::None),
        )
        .build_many(regexes)
        .map_err(Box::new)
}

/// Where the detector's search should start to find the first match that starts in
/// `from..until` (or that there is none), skipping what cannot start one.
pub(crate) fn scout(dfa: &DFA, cache: &mut Cache, hay: &[u8], from: usize, until: usize) -> Scouted {
    let n = hay.len();
    let mut idle = from;
    // The trigger being worked towards and the start of its window.
    let mut target: Option<(usize, usize)> = None;
    loop {
        let (t, w) = match target {
            Some((t, w)) if t >= idle => (t, w.max(idle)),
            _ => {
                let Some(t) = next_trigger(hay, idle) else { return Scouted::Nothing };
                let w = walk_back(hay, t, idle);
                target = Some((t, w));
                (t, w)
            }
        };
        debug_assert!(w <= t);
        if w >= until {
            return Scouted::Nothing;
        }
        let Ok(mut sid) = dfa.start_state_forward(cache, &Input::new(hay).range(w..)) else {
            return Scouted::From(w);
        };
        let mut p = w;
        loop {
            if p == n {
                return match dfa.next_eoi_state(cache, sid) {
                    Ok(eoi) if !eoi.is_match() => Scouted::Nothing,
                    _ => Scouted::From(w),
                };
            }
            sid = match dfa.next_state(cache, sid, hay[p]) {
                Ok(next) => next,
                Err(_) => return Scouted::From(w),
            };
            p += 1;
            if sid.is_tagged() {
                if sid.is_match() || sid.is_quit() || sid.is_unknown() {
                    return Scouted::From(w);
                }
                if sid.is_start() && p > t {
                    // Idle past the trigger: nothing that started in the window is alive.
                    idle = p;
                    break;
                }
                if sid.is_dead() {
                    return Scouted::From(w);
                }
            }
        }
    }
}
