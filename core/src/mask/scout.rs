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
//! Triggers: ASCII digits, capital letters (except one that starts a word followed by a space
//! and a lowercase word, as most sentences start), `@`, `:`, and a `.` after `www`. Every
//! accepted built-in finding holds one (names start with a capital, an all-letter MAC address is
//! refused, context-keyword values must hold a digit). The walk-back from a trigger covers the run of
//! e-mail-local-part bytes around it (`john.smith@`, `fe80:`, `(617`), then repeatedly the
//! punctuation or spaces before it and, when it is one of the words that keywords and name cues
//! are made of (`member`, `id`, `on`, `my`, `card`, `is`, `seen`, `by`, months…), that word too.
//! It stops at any other word, so a capital at the start of a sentence opens a window of a few
//! bytes. Custom and deny-list entities may match anything; a detector with any of them does not
//! scout.
//!
//! The scan with the scout gives exactly the answer of the scan without it; a property test in
//! `detect/tests.rs` compares the two.

use std::sync::LazyLock;

use regex_automata::hybrid::LazyStateID;
use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::util::start;
use regex_automata::{Anchored, Input};

/// Words that keyword and name-cue phrases are made of, lower case. A test in `detect/tests.rs`
/// checks that every literal in the keyword, cue and title patterns and in the written-date
/// patterns is part of one of them, so a keyword added to a pattern cannot be forgotten here.
pub(crate) const PHRASE_WORDS: &[&str] = &[
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
    "dear", // Titles.
    "mr",
    "mrs",
    "ms",
    "miss",
    "mx",
    "dr",
    "prof", // Months, before a day and year.
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

/// [`PHRASE_WORDS`] packed into integers (at most 16 bytes each), by length, sorted; and which
/// two-letter starts they have, so most words are turned away before any search.
struct Phrases {
    by_len: [Vec<u128>; 17],
    starts: [u32; 26],
    /// Which two-letter ends they have.
    ends: [u32; 26],
}

static PHRASE: LazyLock<Phrases> = LazyLock::new(|| {
    let mut p = Phrases { by_len: Default::default(), starts: [0; 26], ends: [0; 26] };
    for w in PHRASE_WORDS {
        let w = w.as_bytes();
        p.by_len[w.len()].push(pack(w));
        if let ([a, b, ..], [.., y, z]) = (w, w) {
            p.starts[usize::from(a - b'a')] |= 1 << (b - b'a');
            p.ends[usize::from(y - b'a')] |= 1 << (z - b'a');
        }
    }
    for list in &mut p.by_len {
        list.sort_unstable();
    }
    p
});

fn pack(w: &[u8]) -> u128 {
    w.iter().fold(0, |k, &b| k << 8 | u128::from(b))
}

/// `lower` (lower case, ASCII alphanumeric) may start a phrase word of two letters or more.
fn may_start(lower: &[u8]) -> bool {
    match lower {
        [a @ b'a'..=b'z', b @ b'a'..=b'z', ..] => PHRASE.starts[usize::from(a - b'a')] & (1 << (b - b'a')) != 0,
        _ => false,
    }
}

fn is_phrase_word(lower: &[u8]) -> bool {
    PHRASE.by_len.get(lower.len()).is_some_and(|list| list.binary_search(&pack(lower)).is_ok())
}

/// Longer than any run of phrase words a pattern glues together without a space between them
/// (`socialsecuritynumberis`); a keyword starts at a word boundary, so a longer word cannot hold
/// the start of a match.
const LONGEST_GLUED: usize = 64;

/// `word` (any case) is one phrase word or several glued together (`policyon`, `acctno`,
/// `driverslicense`: the patterns allow `\s*` between them).
fn is_phrase(word: &[u8]) -> bool {
    let n = word.len();
    if n == 0 || n > LONGEST_GLUED {
        return false;
    }
    // Words here are ASCII letters and digits: setting bit 5 lowers a capital, keeps the rest.
    if n == 1 {
        return is_phrase_word(&[word[0] | 0x20]);
    }
    if !may_start(&[word[0] | 0x20, word[1] | 0x20]) {
        return false;
    }
    if n <= 16 && PHRASE.by_len[n].binary_search(&word.iter().fold(0, |k, &b| k << 8 | u128::from(b | 0x20))).is_ok() {
        return true;
    }
    // Glued phrase words also end like one.
    let (y, z) = (word[n - 2] | 0x20, word[n - 1] | 0x20);
    if !(y.is_ascii_lowercase()
        && z.is_ascii_lowercase()
        && PHRASE.ends[usize::from(y - b'a')] & (1 << (z - b'a')) != 0)
    {
        return false;
    }
    let mut lower = [0_u8; LONGEST_GLUED];
    lower[..n].copy_from_slice(word);
    lower[..n].make_ascii_lowercase();
    let lower = &lower[..n];
    // Split into phrase words of two letters or more (single letters — `a/c`, `driver's`,
    // `i am` — never glue to a neighbour in a pattern): ends[i] says lower[..i] splits.
    let mut ends = [false; LONGEST_GLUED + 1];
    ends[0] = true;
    for j in 0..n {
        if !ends[j] || !may_start(&lower[j..]) {
            continue;
        }
        for i in j + 2..=n.min(j + 16) {
            if !ends[i] && is_phrase_word(&lower[j..i]) {
                ends[i] = true;
            }
        }
    }
    ends[n]
}

/// Bytes of an e-mail local part (and so of anything the detectors glue together).
pub(crate) const fn is_run(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_trigger(hay: &[u8], t: usize) -> bool {
    match hay[t] {
        b'0'..=b'9' | b'@' | b':' => true,
        b'A'..=b'Z' => !capital_word_then_lowercase(&hay[t + 1..]) || after_phrase_word(hay, t),
        b'.' => t >= 3 && hay[t - 3..t].eq_ignore_ascii_case(b"www"),
        _ => false,
    }
}

/// After a capital: lowercase letters, one space, a lowercase letter (`Patient reports`). Unless
/// a cue comes before it (`patient John said`, see [`after_phrase_word`]), such a capital starts
/// no finding by itself: a name needs a second capital or a title's dot, an identifier a digit.
/// When it is the first word of a cue or keyword (`My name is John`, `Member id 123`), the later
/// capital or digit is a trigger whose walk-back reaches it.
fn capital_word_then_lowercase(rest: &[u8]) -> bool {
    let letters = rest.iter().take_while(|b| b.is_ascii_lowercase()).count();
    matches!(rest.get(letters..letters + 2), Some([b' ', b'a'..=b'z']))
}

/// The word before `t` (past punctuation and spaces) is one that phrases are made of.
fn after_phrase_word(hay: &[u8], t: usize) -> bool {
    let (start, end) = word_before(hay, t, 0);
    is_phrase(&hay[start..end])
}

/// The word before `p` past punctuation and spaces, as `start..end` (empty when there is none),
/// looking no further back than `floor`.
#[inline]
fn word_before(hay: &[u8], p: usize, floor: usize) -> (usize, usize) {
    let mut end = p;
    while end > floor && hay[end - 1].is_ascii() && !hay[end - 1].is_ascii_alphanumeric() {
        end -= 1;
    }
    let mut start = end;
    while start > floor && end - start <= LONGEST_GLUED && hay[start - 1].is_ascii_alphanumeric() {
        start -= 1;
    }
    (start, end)
}

/// Bit 7 of each byte lane of `x` set where the byte may be a trigger (a digit, `:`, `@`, a
/// capital or `.`): eight bytes at a time in a general register.
fn candidates(x: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let lanes = |b: u8| u64::from(b) * 0x0101_0101_0101_0101;
    let y = x & LOW7;
    // With bit 7 clear, adding 0x80 - lo sets it exactly when the byte is >= lo, and adding
    // 0x7f - hi exactly when it is > hi; no lane carries into the next.
    let in_range = |lo: u8, hi: u8| (y + lanes(0x80 - lo)) & !(y + lanes(0x7f - hi)) & HIGH;
    (in_range(b'0', b':') | in_range(b'@', b'Z') | in_range(b'.', b'.')) & !x & HIGH
}

/// The next trigger at or after `from`.
pub(crate) fn next_trigger(hay: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(word) = hay.get(at..at + 8) {
        let mut mask = candidates(u64::from_le_bytes(word.try_into().unwrap_or([0; 8])));
        while mask != 0 {
            let t = at + (mask.trailing_zeros() / 8) as usize;
            if is_trigger(hay, t) {
                return Some(t);
            }
            mask &= mask - 1;
        }
        at += 8;
    }
    (at..hay.len()).find(|&t| is_trigger(hay, t))
}

/// The earliest byte (not before `floor`) where a finding whose first trigger is `t` could start.
pub(crate) fn walk_back(hay: &[u8], t: usize, floor: usize) -> usize {
    let mut p = t;
    while p > floor && is_run(hay[p - 1]) {
        p -= 1;
    }
    loop {
        // Punctuation and spaces, then the word before them if a phrase is made of it.
        let (start, end) = word_before(hay, p, floor);
        if !is_phrase(&hay[start..end]) {
            return end;
        }
        p = start;
    }
}

/// The DFA's unanchored start states after a word byte and after any other byte, and the cache
/// generation they belong to. A state reached by transitions that equals one of them has nothing
/// in flight. (Comparing IDs, not the start tag: a state first built by a transition never
/// carries the tag.)
#[derive(Debug, Clone, Copy)]
pub(crate) struct Idle {
    clears: usize,
    states: [LazyStateID; 2],
}

impl Idle {
    fn new(dfa: &DFA, cache: &mut Cache) -> Option<Self> {
        let mut states = [LazyStateID::default(); 2];
        for (state, before) in states.iter_mut().zip([b'a', b' ']) {
            let config = start::Config::new().anchored(Anchored::No).look_behind(Some(before));
            *state = dfa.start_state(cache, &config).ok()?;
        }
        Some(Self { clears: cache.clear_count(), states })
    }

    /// Whether `sid` has nothing in flight (false when the cache was cleared since, until
    /// [`Idle::new`] runs again).
    fn is(&self, cache: &Cache, sid: LazyStateID) -> bool {
        self.clears == cache.clear_count() && self.states.contains(&sid)
    }
}

/// What a scout run found.
pub(crate) enum Scouted {
    /// A match starts at or after this position (and before the DFA's match state).
    From(usize),
    /// No match starts in `from..until`.
    Nothing,
}

/// The unanchored DFA over every pattern.
pub(crate) fn build_dfa(
    regexes: &[&str],
    syntax: regex_automata::util::syntax::Config,
) -> Result<DFA, Box<regex_automata::hybrid::BuildError>> {
    build_dfa_with(regexes, syntax, DFA::config().cache_capacity(64 << 20))
}

/// [`build_dfa`] with `config` (tests make its cache as small as it can be).
pub(crate) fn build_dfa_with(
    regexes: &[&str],
    syntax: regex_automata::util::syntax::Config,
    config: regex_automata::hybrid::dfa::Config,
) -> Result<DFA, Box<regex_automata::hybrid::BuildError>> {
    DFA::builder()
        .syntax(syntax)
        .configure(config.match_kind(regex_automata::MatchKind::LeftmostFirst))
        .thompson(
            regex_automata::nfa::thompson::Config::new()
                .which_captures(regex_automata::nfa::thompson::WhichCaptures::None),
        )
        .build_many(regexes)
        .map_err(Box::new)
}

/// Where the detector's search should start to find the first match that starts in
/// `from..until` (or that there is none), skipping what cannot start one.
///
/// `idle` keeps the start states between calls on the same cache (they are rebuilt after the
/// cache was cleared).
pub(crate) fn scout(
    dfa: &DFA,
    cache: &mut Cache,
    idle_states: &mut Option<Idle>,
    hay: &[u8],
    from: usize,
    until: usize,
) -> Scouted {
    let n = hay.len();
    if idle_states.as_ref().is_none_or(|s| s.clears != cache.clear_count()) {
        *idle_states = Idle::new(dfa, cache);
    }
    let Some(states) = idle_states.as_ref() else { return Scouted::From(from) };
    let mut states = *states;
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
        let mut sid = match dfa.start_state_forward(cache, &Input::new(hay).range(w..)) {
            Ok(sid) if !sid.is_tagged() => sid,
            _ => return Scouted::From(w),
        };
        let mut p = w;
        loop {
            if p == n {
                return match dfa.next_eoi_state(cache, sid) {
                    Ok(eoi) if !eoi.is_match() => Scouted::Nothing,
                    _ => Scouted::From(w),
                };
            }
            // `sid` is never tagged here (start states are not specialized, and every tagged
            // state returns below), so the fast path applies; a transition not built yet comes
            // back unknown and goes through the full call, which builds it.
            let next = dfa.next_state_untagged(cache, sid, hay[p]);
            if next.is_unknown() {
                match dfa.next_state(cache, sid, hay[p]) {
                    Ok(next) => sid = next,
                    Err(_) => return Scouted::From(w),
                }
            } else {
                sid = next;
            }
            p += 1;
            if sid.is_tagged() {
                // A match state, or dead (after a match), or quit: the full search decides.
                return Scouted::From(w);
            }
            if p > t && states.is(cache, sid) {
                // Idle past the trigger: nothing that started in the window is alive.
                idle = p;
                break;
            }
            if states.clears != cache.clear_count() {
                let Some(again) = Idle::new(dfa, cache) else { return Scouted::From(w) };
                states = again;
                *idle_states = Some(again);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use regex_automata::Input;

    use super::*;

    #[test]
    fn the_dfa_is_idle_after_a_plain_word_and_busy_after_a_capital() {
        let d = crate::mask::detect::Detector::new(&[], &[]).unwrap();
        let (dfa, pool) = d.scout_parts();
        let mut cache = pool.get();
        let hay = b"Well done. Plan mild pain";
        // Transitions first, start states after: the comparison must not depend on the order
        // in which the lazy DFA built its states.
        let mut sid = dfa.start_state_forward(&mut cache, &Input::new(hay)).unwrap();
        let mut seen = Vec::new();
        for &b in hay {
            sid = dfa.next_state(&mut cache, sid, b).unwrap();
            seen.push(sid);
        }
        let states = Idle::new(dfa, &mut cache).unwrap();
        let idle: Vec<usize> = (0..hay.len()).filter(|&i| states.is(&cache, seen[i])).map(|i| i + 1).collect();
        // After "done. " and "mild "; not after "Well " or "Plan ", where a second capitalized
        // word would make a name.
        assert_eq!(idle, [11, 21]);
    }

    #[test]
    fn a_walk_back_covers_keyword_phrases_and_stops_at_other_words() {
        let hay = b"stable. my member ID on my card is W1234567";
        let t = hay.iter().position(|&b| b == b'W').unwrap();
        assert_eq!(walk_back(hay, t, 0), 6, "back over the phrase to just after 'stable'");
        let hay = b"seen today; john.smith@example.org";
        let t = hay.iter().position(|&b| b == b'@').unwrap();
        assert_eq!(walk_back(hay, t, 0), 10, "back over the local part to just after 'today'");
        assert_eq!(walk_back(hay, t, 15), 15, "never before the floor");
        assert_eq!(next_trigger(b"see www.x and 7", 0), Some(7));
        let all: Vec<u8> = (0..=255).collect();
        for (i, &b) in all.iter().enumerate() {
            let word = u64::from_le_bytes(std::array::from_fn(|k| all[(i + k) % 256]));
            let lane = candidates(word) & 0x80 != 0;
            assert_eq!(lane, b.is_ascii_digit() || b.is_ascii_uppercase() || b":@.".contains(&b), "byte {b:#x}");
        }
        assert!(is_phrase(b"policyon") && is_phrase(b"DriversLicense") && is_phrase(b"acctno"));
        assert!(!is_phrase(b"mass") && !is_phrase(b"stable") && !is_phrase(b""));
        assert_eq!(next_trigger(b"no trigger. at all", 0), None);
    }
}
