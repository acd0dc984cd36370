//! The detectors: one multi-pattern regex over every entity, then a validator per match.
//!
//! Every built-in pattern matches ASCII only, so a finding never starts or ends inside a UTF-8
//! character. The search is leftmost-first over all patterns at once (regex-automata's meta
//! engine picks a literal prefilter where the patterns allow one and a lazy DFA otherwise); a
//! match that its validator refuses (a Luhn failure, an SSN area of 666, a ZIP with no state or
//! keyword before it) is retried against the other patterns anchored at the same start, then the
//! search moves on one byte. Validators may look *behind* a match (keywords, the byte before) but
//! never ahead — what may follow a match is written into the pattern — so that the streaming
//! masker, which asks a lazy DFA whether a position could still start a match, judges a value the
//! same however the text was cut.

use std::sync::LazyLock;

use regex_automata::hybrid::LazyStateID;
use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::meta::Regex;
use regex_automata::util::pool::{Pool, PoolGuard};
use regex_automata::util::start;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input, MatchKind, PatternSet};
use rustc_hash::FxHashMap;

use super::validate as v;

/// How far back a validator may look, in bytes. The streaming masker keeps this much of the text
/// it has already emitted.
pub(crate) const LOOKBEHIND: usize = 64;

/// Text shorter than this is searched without the scout: its set-up costs more than a lazy
/// DFA pass over so few bytes.
const SCOUT_MIN: usize = 512;

/// Most stream caches a detector keeps for the next streams. Each holds at most the live DFA's
/// cache capacity (4 MiB); a few hundred kilobytes is usual.
pub(crate) const SPARE_STREAM_CACHES: usize = 8;
/// With more trigger windows than this in the streaming masker's horizon, every position is asked.
const DENSE_WINDOWS: usize = 48;
/// A scout window that skipped fewer bytes than this counts as short.
const DENSE_SKIP: usize = 24;
/// After this many short windows in a row the text is dense…
const DENSE_RUNS: u32 = 3;
/// …and the next this many bytes are searched without the scout; twice as many each time the
/// text is found dense again without a long window between, up to `DENSE_SPAN_MAX`. (Each
/// return to the scout costs a few windows, each a scout pass and a search of its own: on
/// uniformly dense text a fixed 1 KiB stretch cost a sixth of the scan.)
const DENSE_SPAN: usize = 1024;
const DENSE_SPAN_MAX: usize = 64 * 1024;
/// Where the scout is about to start (or start again), this many bytes ahead are looked at
/// first: with at least one in [`DENSE_SHARE`] a digit, a capital, `@` or `:` (what the scout
/// stops at), the text is dense from the start. Clean prose has about one in thirty; clinical
/// notes, chat turns and records one in six to one in three. On 800-byte texts the scout and
/// the search at each place a match can start cost about the same at one in six (the scout is
/// 1.3 times faster at one in twenty; the search 1.1 times faster at one in four and 1.15
/// times at one in three). A longer look cost clean short texts more than it saved.
const DENSE_PROBE: usize = 128;
const DENSE_SHARE: usize = 6;

/// An entity type, as an index into [`Detector::entities`].
pub type EntityId = usize;

/// The lazy DFA caches a scan takes from the detector's pools, each when it is first needed
/// (most scans need only the first).
#[derive(Default)]
pub(crate) struct Caches<'d> {
    /// The scout DFA's cache, with its idle states.
    scout: Option<(PoolGuard<'d, Cache, CacheFn>, Option<super::scout::Idle>)>,
    /// The full set's cache and a pattern set, for a match a validator refused.
    retry: Option<(PoolGuard<'d, Cache, CacheFn>, PatternSet)>,
    /// Names these caches to a [`KeyMemo`] (0 until one asks): a memo's states are good only
    /// in the scout cache they were found in, which these caches keep while they live.
    memo_id: u64,
}

/// The last name given to a [`Caches`] for memos.
static MEMO_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One detected value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finding {
    /// What it is.
    pub entity: EntityId,
    /// Byte span of the value itself (a keyword before it is not part of it).
    pub start: usize,
    /// End of the value (exclusive).
    pub end: usize,
    /// Start of the whole pattern match (a keyword before the value is in it).
    pub match_start: usize,
    /// End of the whole pattern match (the search resumes here).
    pub match_end: usize,
    /// 0–1: how sure the detector is.
    pub confidence: f32,
}

/// What a match must also satisfy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    None,
    Ssn,
    Card,
    Npi,
    Dea,
    Iban,
    Vin,
    Imei,
    Ipv4,
    Ipv6,
    NumericDate,
    WrittenDate,
    Phone,
    Zip,
    /// The value holds a digit (context-keyword identifiers).
    HasDigit,
    /// Title or cue + name: the name is not a common capitalized word.
    Name,
    /// Two capitalized words: a known first name and a known surname.
    NamePair,
    /// A URL: trailing punctuation is not part of it.
    Url,
    /// A MAC address holds a digit (an all-letter one such as `aa-bb-cc-dd-ee-ff` reads as a
    /// word far more often than as an address, and the trigger scan relies on it).
    Mac,
}

/// One pattern of the set.
#[derive(Debug, Clone)]
struct Pattern {
    entity: EntityId,
    regex: String,
    check: Check,
    confidence: f32,
    /// The pattern marks its value with a group `v` (a keyword or title before it) that is not
    /// the whole match.
    has_value: bool,
    /// When the `v` group ends the pattern at its top level (but for a `\b`): its pattern id in
    /// [`Splits`], where what comes before the group and the value (with the `\b`) are compiled
    /// apart. Two anchored lazy-DFA searches then find the value where a capturing search would
    /// need a backtracker.
    split: Option<regex_automata::PatternID>,
}

impl Pattern {
    fn new(entity: EntityId, regex: String, check: Check, confidence: f32) -> Self {
        Self { entity, regex, check, confidence, has_value: false, split: None }
    }
}

/// A custom entity from the configuration.
#[derive(Debug, Clone)]
pub struct CustomEntity {
    /// Entity name (`EMPLOYEE_ID`).
    pub name: String,
    /// A regex (regex-automata syntax, byte-oriented: ASCII classes unless `(?u)` is set). A
    /// group named `v` marks the value inside a larger match.
    pub pattern: String,
    /// Confidence of a finding.
    pub confidence: f32,
}

/// Deny-list entity from the configuration: exact terms, matched as whole words.
#[derive(Debug, Clone)]
pub struct DenyList {
    /// Entity name.
    pub name: String,
    /// The terms.
    pub terms: Vec<String>,
    /// Match case exactly (default: any case).
    pub case_sensitive: bool,
}

/// Why a detector could not be built.
#[derive(Debug, thiserror::Error)]
#[error("masking pattern for {entity} does not compile: {source}")]
pub struct BuildError {
    entity: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// The built-in entities, in the order of their ids.
pub const BUILTIN: &[&str] = &[
    "SSN",
    "PHONE",
    "EMAIL",
    "URL",
    "IP_ADDRESS",
    "DATE",
    "ZIP",
    "MRN",
    "HEALTH_PLAN",
    "ACCOUNT",
    "CERTIFICATE",
    "LICENSE",
    "CREDIT_CARD",
    "NPI",
    "DEA",
    "IBAN",
    "VIN",
    "IMEI",
    "MAC_ADDRESS",
    "STREET_ADDRESS",
    "PERSON",
];

fn id(name: &str) -> EntityId {
    BUILTIN.iter().position(|e| *e == name).unwrap_or(0)
}

/// What the name lists say of a word: a known first name, a known last name, a word that is not
/// a name ([`NOT_NAMES`] and [`NOT_NAME_WORDS`]). One map, so each word of a name is looked up
/// once.
const FIRST_NAME: u8 = 1;
const LAST_NAME: u8 = 2;
const NOT_A_NAME: u8 = 4;
static NAME_WORDS: LazyLock<FxHashMap<&'static [u8], u8>> = LazyLock::new(|| {
    let mut words = FxHashMap::default();
    let lists = [(include_str!("names/first.txt"), FIRST_NAME), (include_str!("names/last.txt"), LAST_NAME)];
    for (list, flag) in lists {
        for name in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
            *words.entry(name.as_bytes()).or_insert(0) |= flag;
        }
    }
    for word in NOT_NAMES.iter().chain(NOT_NAME_WORDS) {
        *words.entry(word.as_bytes()).or_insert(0) |= NOT_A_NAME;
    }
    words
});

/// A name value's words as the lists see them: the first word's flags, the last word's (the
/// first's when there is one word), whether there is more than one, and whether any word is not
/// a name. `None` for a value with no word. Words are split where `str::split_whitespace`
/// splits ASCII text.
fn name_words(value: &[u8]) -> Option<(u8, u8, bool, bool)> {
    let mut words = value.split(|b| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')).filter(|w| !w.is_empty());
    let flags = |w: &[u8]| NAME_WORDS.get(w).copied().unwrap_or(0);
    let first = flags(words.next()?);
    let (mut last, mut many, mut not) = (first, false, first & NOT_A_NAME != 0);
    for w in words {
        last = flags(w);
        many = true;
        not |= last & NOT_A_NAME != 0;
    }
    Some((first, last, many, not))
}

/// Capitalized words that follow a cue or a title but are not names.
const NOT_NAMES: &[&str] = &[
    "The",
    "This",
    "That",
    "These",
    "He",
    "She",
    "They",
    "We",
    "It",
    "His",
    "Her",
    "Their",
    "Patient",
    "Doctor",
    "Hospital",
    "Clinic",
    "Unknown",
    "None",
    "Not",
    "No",
    "Yes",
    "Today",
    "Name",
    "Is",
    "Was",
    "And",
    "Or",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "Admitted",
    "Discharged",
    "Date",
    "Phone",
    "Email",
    "Address",
    "Age",
    "Sex",
    "Male",
    "Female",
    "Record",
    "Medical",
    "Room",
    "Bed",
    "Status",
    "Stable",
    "Pending",
    "Note",
    "Notes",
    "History",
    "Plan",
    "Assessment",
    "Follow",
    "Here",
    "There",
    "An",
    "A",
    "In",
    "On",
    "At",
    "For",
    "With",
    "To",
    "From",
    "By",
    "Please",
    "Thanks",
    "Thank",
    "Hello",
    "Hi",
    "Dear",
    "Good",
    "Regards",
    "Sincerely",
    "Mr",
    "Mrs",
    "Ms",
    "Dr",
    "Of",
    "As",
    "Also",
];

/// Capitalized words that pair with a first name or a surname in organization and place names.
const NOT_NAME_WORDS: &[&str] = &[
    "Hospital",
    "Clinic",
    "Center",
    "Centre",
    "Health",
    "Healthcare",
    "Medical",
    "Medicine",
    "Street",
    "Avenue",
    "Road",
    "Care",
    "Plan",
    "Insurance",
    "University",
    "College",
    "School",
    "Pharmacy",
    "Group",
    "Blue",
    "Cross",
    "Shield",
    "Team",
    "Department",
    "Unit",
    "Ward",
    "Lab",
    "Labs",
    "Services",
    "Service",
    "Foundation",
    "Memorial",
    "General",
    "County",
    "City",
    "State",
    "Valley",
    "Park",
    "Lake",
    "River",
    "North",
    "South",
    "East",
    "West",
    "Street",
    "Drive",
    "Lane",
    "Court",
    "Place",
    "Boulevard",
    "Way",
    "Heights",
    "Hills",
    "Village",
    "Regional",
    "Community",
    "Family",
    "Children",
    "Kaiser",
    "Permanente",
    "Aetna",
    "Cigna",
    "Humana",
    "Anthem",
    "Medicare",
    "Medicaid",
    "Pilgrim",
    "Harvard",
    "Tufts",
    "United",
    "Healthcare",
    "Partners",
    "Associates",
    "Inc",
    "Corp",
    "Company",
    "Bank",
    "Trust",
    "Fund",
    "Office",
    "Building",
    "Tower",
    "Hall",
    "Room",
    "Floor",
    "Suite",
    "Campus",
    "Institute",
    "Research",
    "Program",
    "Project",
    "Report",
    "Summary",
    "Discharge",
    "Admission",
    "Emergency",
    "Surgery",
    "Cardiology",
    "Oncology",
    "Pediatrics",
    "Radiology",
    "Neurology",
    "Pulmonology",
    "Orthopedics",
    "Dermatology",
    "Psychiatry",
    "Urology",
    "Nephrology",
    "Endocrinology",
    "Gastroenterology",
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
    "Type",
    "Diabetes",
    "Disease",
    "Syndrome",
    "Test",
    "Result",
    "Results",
    "Order",
    "Orders",
];

/// Separators after a context keyword: `MRN: `, `Member ID #`, `Acct. No. `, `"acct_no": "`,
/// `my account number is `, `the subscriber ID on my card is `.
const SEP: &str = r#"(?:[\s_]*(?:number|num|nbr|no\.?|id|\#))?["']?\s*(?:[:#=.\-]|(?:on\s+(?:my|the|your)\s+card\s+)?is)?\s*["']?\s*"#;

/// Titles before a name (`Dr. Smith`).
const TITLES: [&str; 7] = ["Mr", "Mrs", "Ms", "Miss", "Mx", "Dr", "Prof"];
/// How sure a title and a capitalized word make a name.
const TITLE_CONFIDENCE: f32 = 0.85;

fn builtin_patterns() -> Vec<Pattern> {
    let p =
        |entity: &str, regex: String, check: Check, confidence: f32| Pattern::new(id(entity), regex, check, confidence);
    let months = r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)";
    let name = r"(?:Mc|Mac|O')?[A-Z][a-z]+(?:-(?:Mc|Mac|O')?[A-Z][a-z]+)?";
    let titles = TITLES.join("|");
    vec![
        // Context-keyword identifiers first: their match starts at the keyword, left of the value.
        p(
            "MRN",
            format!(r"(?i)\b(?:mrn|medical[\s_]+record(?:[\s_]+(?:number|no\.?|#))?|med\.?\s*rec\.?|chart){SEP}(?P<v>[a-z0-9][a-z0-9\-]{{3,19}})\b"),
            Check::HasDigit,
            0.9,
        ),
        p(
            "HEALTH_PLAN",
            format!(r"(?i)\b(?:member|subscriber|beneficiary|insurance|health\s+plan|plan\s+id|policy|group\s+(?:number|no\.?|\#)|medicaid|medicare)(?:\s+(?:id|number|no\.?|#))?{SEP}(?P<v>[a-z0-9][a-z0-9\-]{{4,19}})\b"),
            Check::HasDigit,
            0.85,
        ),
        p(
            "ACCOUNT",
            format!(r"(?i)\b(?:account|acct\.?|a/c|bank\s+account){SEP}(?P<v>[a-z0-9][a-z0-9\-]{{5,19}})\b"),
            Check::HasDigit,
            0.85,
        ),
        p(
            "CERTIFICATE",
            format!(r"(?i)\b(?:certificate|cert\.?|birth\s+certificate|death\s+certificate){SEP}(?P<v>[a-z0-9][a-z0-9\-]{{4,19}})\b"),
            Check::HasDigit,
            0.85,
        ),
        p(
            "LICENSE",
            format!(r"(?i)\b(?:driver'?s[\s_]+license|drivers?[\s_]*license|license|licence|dl|lic\.?){SEP}(?P<v>[a-z0-9][a-z0-9\-]{{4,19}})\b"),
            Check::HasDigit,
            0.85,
        ),
        p("SSN", format!(r"(?i)\b(?:ssn|social\s+security(?:\s+(?:number|no\.?|#))?|ss\#){SEP}(?P<v>\d{{9}})\b"), Check::Ssn, 0.95),
        p("NPI", format!(r"(?i)\bnpi{SEP}(?P<v>\d{{10}})\b"), Check::Npi, 0.95),
        p("IMEI", format!(r"(?i)\bimei{SEP}(?P<v>\d{{15}})\b"), Check::Imei, 0.95),
        // Self-evident shapes.
        p("EMAIL", r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b".into(), Check::None, 0.95),
        p(
            "URL",
            r#"(?i)\b(?:https?://|www\.)[a-z0-9.\-]+(?::\d{1,5})?(?:[/?#][^\s<>"'`{}|\\^\[\]]*)?"#.into(),
            Check::Url,
            0.9,
        ),
        p("IBAN", r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b".into(), Check::Iban, 0.95),
        p("CREDIT_CARD", r"\b\d(?:[ \-]?\d){12,18}\b".into(), Check::Card, 0.95),
        p("IMEI", r"\b\d{2}[ \-]?\d{6}[ \-]?\d{6}[ \-]?\d\b".into(), Check::Imei, 0.8),
        p("NPI", r"\b[12]\d{9}\b".into(), Check::Npi, 0.7),
        p("DEA", r"\b[A-Z][A-Z9]\d{7}\b".into(), Check::Dea, 0.9),
        p("VIN", r"\b[A-HJ-NPR-Z0-9]{17}\b".into(), Check::Vin, 0.9),
        p("SSN", r"\b\d{3}[\- ]\d{2}[\- ]\d{4}\b".into(), Check::Ssn, 0.9),
        p(
            "DATE",
            r"\b(?:19|20)\d{2}-[01]\d-[0-3]\d(?:[T ][0-2]\d:[0-5]\d(?::[0-5]\d(?:\.\d{1,9})?)?(?:Z|[+\-]\d{2}:?\d{2})?)?\b"
                .into(),
            Check::NumericDate,
            0.9,
        ),
        p("DATE", r"\b[01]?\d/[0-3]?\d/(?:\d{4}|\d{2})\b".into(), Check::NumericDate, 0.85),
        p(
            "DATE",
            format!(r"(?i)\b{months}\.?\s+[0-3]?\d(?:st|nd|rd|th)?,?\s+(?:19|20)\d{{2}}\b"),
            Check::WrittenDate,
            0.9,
        ),
        p(
            "DATE",
            format!(r"(?i)\b[0-3]?\d(?:st|nd|rd|th)?\s+(?:of\s+)?{months}\.?,?\s+(?:19|20)\d{{2}}\b"),
            Check::WrittenDate,
            0.9,
        ),
        p(
            "PHONE",
            r"(?:\+1[ .\-]?|\b1[ .\-])?(?:\([2-9]\d{2}\)|\b[2-9]\d{2})[ .\-]?[2-9]\d{2}[ .\-]\d{4}\b".into(),
            Check::Phone,
            0.85,
        ),
        p("PHONE", r"\+[1-9]\d{0,3}(?:[ .\-]?\(?\d{1,4}\)?){2,5}\b".into(), Check::Phone, 0.8),
        p("MAC_ADDRESS", r"(?i)\b[0-9a-f]{2}(?:[:\-][0-9a-f]{2}){5}\b".into(), Check::Mac, 0.9),
        p("MAC_ADDRESS", r"(?i)\b[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}\b".into(), Check::Mac, 0.9),
        p("IP_ADDRESS", r"\b\d{1,3}(?:\.\d{1,3}){3,}\b".into(), Check::Ipv4, 0.9),
        p("IP_ADDRESS", r"(?i)(?:\b[0-9a-f]{1,4})?(?::[0-9a-f]{0,4}){2,7}(?:\.\d{1,3}){0,3}".into(), Check::Ipv6, 0.9),
        p("ZIP", r"\b\d{5}(?:-\d{4})?\b".into(), Check::Zip, 0.8),
        p(
            "STREET_ADDRESS",
            r"\b\d{1,6}\s(?:[NSEW]\.?\s|(?:North|South|East|West)\s)?(?:[A-Z][a-z]+\s|\d{1,3}(?:st|nd|rd|th)\s){1,3}(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter|Parkway|Pkwy|Circle|Cir|Highway|Hwy|Square|Sq|Trail|Trl)\b\.?(?:,?\s(?:Apt|Apartment|Suite|Ste|Unit|Rm|Room|\#)\.?\s?\#?[A-Za-z0-9\-]{1,6}\b)?"
                .into(),
            Check::None,
            0.85,
        ),
        p(
            "PERSON",
            format!(r"\b(?:{titles})\.?\s(?P<v>{name}(?: [A-Z]\.)?(?: {name})?)\b"),
            Check::Name,
            TITLE_CONFIDENCE,
        ),
        p(
            "PERSON",
            format!(
                r#"(?i:\b(?:patient(?:[ _]?name)?|pt|(?:(?:full|first|last|legal|preferred|nick)[ _]?)?name|seen\s+by|attending|physician|provider|nurse|caregiver|guardian|spouse|mother|father|son|daughter|wife|husband|signed\s+by|referred\s+by|my\s+name\s+is|contact|emergency\s+contact|it'?s|it\s+is|this\s+is|i'?m|i\s+am|call\s+me|thanks,?|thank\s+you,?|hi,?|hello,?|dear))["']?\s*[:=,\-]?\s*["']?(?:(?:{titles})\.?\s)?(?P<v>{name}(?: [A-Z]\.)?(?: {name}){{0,2}})\b"#
            ),
            Check::Name,
            0.8,
        ),
        p("PERSON", format!(r"\b(?P<v>{name}(?: [A-Z]\.)? {name})\b"), Check::NamePair, 0.75),
    ]
}

/// The compiled detector set. Built once per configuration; shared by every session.
#[derive(Debug)]
pub struct Detector {
    entities: Vec<String>,
    patterns: Vec<Pattern>,
    all: Regex,
    /// Each pattern on its own, for anchored searches at a known start and for captures: the
    /// small regex runs its own lazy DFA and backtracker, where the combined one would fall back
    /// to a backtracker over every pattern's NFA.
    alone: Vec<Regex>,
    /// The split patterns' halves (see [`Pattern::split`]).
    splits: Option<Splits>,
    /// Every pattern at once, anchored, keeping every thread alive (`MatchKind::All`): whether a
    /// position could still start a match once more text comes.
    live: DFA,
    /// Caches for `live` when [`Detector::scan`] asks which patterns match at a position.
    live_caches: Pool<Cache, CacheFn>,
    /// Caches for `live` that finished streams gave back, for the next streams (at most
    /// [`SPARE_STREAM_CACHES`]).
    stream_caches: std::sync::Mutex<Vec<Cache>>,
    /// The unanchored DFA the scout drives over text between triggers (see `scout.rs`), with
    /// its caches; none when custom or deny-list entities are configured.
    scout: Option<(DFA, Pool<Cache, CacheFn>)>,
}

type CacheFn = Box<dyn Fn() -> Cache + Send + Sync + std::panic::UnwindSafe + std::panic::RefUnwindSafe>;
type PairFn = Box<dyn Fn() -> (Cache, Cache) + Send + Sync + std::panic::UnwindSafe + std::panic::RefUnwindSafe>;

/// What comes before each split pattern's value, and the value with what follows, each set as
/// one lazy DFA searched anchored at one of its patterns (a pattern's id is its index among the
/// split ones). One DFA per set, not a regex per half: a meta regex's set-up for each of these
/// short searches cost more than the search.
struct Splits {
    before: DFA,
    value: DFA,
    caches: Pool<(Cache, Cache), PairFn>,
}

impl std::fmt::Debug for Splits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Splits({} patterns)", self.before.pattern_len())
    }
}

/// A leftmost-first lazy DFA over `regexes`, each of which can be searched alone; `None` if one
/// does not compile.
fn split_dfa(regexes: &[&str]) -> Option<DFA> {
    DFA::builder()
        .syntax(syntax_config())
        .configure(DFA::config().match_kind(MatchKind::LeftmostFirst).starts_for_each_pattern(true))
        .thompson(
            regex_automata::nfa::thompson::Config::new()
                .which_captures(regex_automata::nfa::thompson::WhichCaptures::None),
        )
        .build_many(regexes)
        .ok()
}

impl Detector {
    /// The built-in detectors plus `custom` and `deny` entities (those take priority).
    pub fn new(custom: &[CustomEntity], deny: &[DenyList]) -> Result<Self, BuildError> {
        let mut entities: Vec<String> = BUILTIN.iter().map(|s| (*s).to_owned()).collect();
        let mut patterns = Vec::new();
        let mut entity = |name: &str| match entities.iter().position(|e| e == name) {
            Some(i) => i,
            None => {
                entities.push(name.to_owned());
                entities.len() - 1
            }
        };
        for c in custom {
            let e = entity(&c.name);
            patterns.push(Pattern::new(e, c.pattern.clone(), Check::None, c.confidence));
        }
        for d in deny {
            let e = entity(&d.name);
            let alts: Vec<String> = d.terms.iter().map(|t| regex_syntax_escape(t)).collect();
            let flags = if d.case_sensitive { "" } else { "(?i)" };
            let regex = format!(r"{flags}\b(?:{})\b", alts.join("|"));
            patterns.push(Pattern::new(e, regex, Check::None, 1.0));
        }
        patterns.extend(builtin_patterns());
        let mut alone = Vec::with_capacity(patterns.len());
        let mut halves: Vec<(String, String)> = Vec::new();
        for p in &mut patterns {
            // Compile one at a time first, so an error names its entity.
            let one = Regex::builder()
                .syntax(syntax_config())
                .configure(Regex::config().utf8_empty(false))
                .build(&p.regex)
                .map_err(|e| BuildError { entity: entities[p.entity].clone(), source: Box::new(e) })?;
            // A group around the whole pattern (`\b(?P<v>…)\b`) is the match itself: nothing to
            // find (a name pair, the commonest match in dense text, was two searches more).
            p.has_value =
                one.group_info().to_index(regex_automata::PatternID::ZERO, "v").is_some() && !value_is_whole(&p.regex);
            if p.has_value
                && let Some((before, value)) = split_at_value(&p.regex)
                && split_dfa(&[before.as_str()]).is_some()
                && split_dfa(&[value.as_str()]).is_some()
            {
                p.split = regex_automata::PatternID::new(halves.len()).ok();
                halves.push((before, value));
            }
            alone.push(one);
        }
        let splits = if halves.is_empty() {
            None
        } else {
            let before = split_dfa(&halves.iter().map(|h| h.0.as_str()).collect::<Vec<_>>());
            let value = split_dfa(&halves.iter().map(|h| h.1.as_str()).collect::<Vec<_>>());
            match (before, value) {
                (Some(before), Some(value)) => {
                    let (b, v) = (before.clone(), value.clone());
                    let caches: Pool<(Cache, Cache), PairFn> =
                        Pool::new(Box::new(move || (b.create_cache(), v.create_cache())));
                    Some(Splits { before, value, caches })
                }
                // Each compiled alone; together they should too. If not, captures decide.
                _ => {
                    for p in &mut patterns {
                        p.split = None;
                    }
                    None
                }
            }
        };
        let regexes: Vec<&str> = patterns.iter().map(|p| p.regex.as_str()).collect();
        let err =
            |e: Box<dyn std::error::Error + Send + Sync>| BuildError { entity: "the combined set".into(), source: e };
        let all = Regex::builder()
            .syntax(syntax_config())
            .configure(
                Regex::config().match_kind(MatchKind::LeftmostFirst).utf8_empty(false).hybrid_cache_capacity(64 << 20),
            )
            .build_many(&regexes)
            .map_err(|e| err(Box::new(e)))?;
        let live = DFA::builder()
            .syntax(syntax_config())
            .configure(DFA::config().match_kind(MatchKind::All).cache_capacity(4 << 20))
            .thompson(
                regex_automata::nfa::thompson::Config::new()
                    .which_captures(regex_automata::nfa::thompson::WhichCaptures::None),
            )
            .build_many(&regexes)
            .map_err(|e| err(Box::new(e)))?;
        let for_pool = live.clone();
        let live_caches: Pool<Cache, CacheFn> = Pool::new(Box::new(move || for_pool.create_cache()));
        let scout = if custom.is_empty() && deny.is_empty() {
            let dfa = super::scout::build_dfa(&regexes, syntax_config()).map_err(|e| err(e))?;
            let for_pool = dfa.clone();
            Some((dfa, Pool::new(Box::new(move || for_pool.create_cache()) as CacheFn)))
        } else {
            None
        };
        Ok(Self { entities, patterns, all, alone, splits, live, live_caches, stream_caches: Default::default(), scout })
    }

    #[cfg(test)]
    pub(crate) fn scout_parts(&self) -> &(DFA, Pool<Cache, CacheFn>) {
        self.scout.as_ref().unwrap()
    }

    /// Entity names by id.
    pub fn entities(&self) -> &[String] {
        &self.entities
    }

    /// The id of an entity name.
    pub fn entity(&self, name: &str) -> Option<EntityId> {
        self.entities.iter().position(|e| e.eq_ignore_ascii_case(name))
    }

    /// A cache for [`Detector::live_from`], one per stream: one a finished stream gave back,
    /// when there is one. A new cache builds the lazy DFA's states as the text asks for them,
    /// and that cost a stream of a few kilobytes (most responses) more than judging its text.
    pub(crate) fn live_cache(&self) -> Cache {
        let spare = self.stream_caches.lock().ok().and_then(|mut spare| spare.pop());
        spare.unwrap_or_else(|| self.live.create_cache())
    }

    /// How many stream caches are kept for the next streams.
    #[cfg(test)]
    pub(crate) fn spare_stream_caches(&self) -> usize {
        self.stream_caches.lock().map(|spare| spare.len()).unwrap_or(0)
    }

    /// Takes back a finished stream's cache, for the next stream.
    pub(crate) fn give_back(&self, cache: Cache) {
        if let Ok(mut spare) = self.stream_caches.lock()
            && spare.len() < SPARE_STREAM_CACHES
        {
            spare.push(cache);
        }
    }

    /// Findings whose match starts in `from..until`, in order, not overlapping. `hay[..from]` is
    /// context (look-behind) only; the end of `hay` is the end of the text.
    pub fn scan(&self, hay: &[u8], from: usize, until: usize, out: &mut Vec<Finding>) {
        self.scan_with(hay, from..until, out, (SCOUT_MIN, DENSE_RUNS), true, &mut Caches::default());
    }

    /// [`Detector::scan`] over a whole `text`, with caches the caller keeps from one text to
    /// the next: for the thousands of short values of one document, taking the caches from
    /// their pools for each value cost more than finding most of them clean.
    pub(crate) fn scan_text<'d>(&'d self, text: &[u8], out: &mut Vec<Finding>, caches: &mut Caches<'d>) {
        self.scan_with(text, 0..text.len(), out, (SCOUT_MIN, DENSE_RUNS), true, caches);
    }

    /// Whether `text` holds nothing to mask. For many tiny texts (a tag, an attribute): one
    /// unanchored search each costs less there than a search at each place a match can start.
    pub(crate) fn finds_nothing(&self, text: &[u8]) -> bool {
        let mut out = Vec::new();
        self.scan_with(text, 0..text.len(), &mut out, (SCOUT_MIN, DENSE_RUNS), false, &mut Caches::default());
        out.is_empty()
    }

    /// [`Detector::scan`], scouting while at least `scout.0` bytes are left and until `scout.1`
    /// short windows in a row.
    /// With `anchored`, where the scout is not used, the search runs anchored at each candidate
    /// start (see [`next_anchored`]).
    fn scan_with<'d>(
        &'d self,
        hay: &[u8],
        std::ops::Range { start: from, end: until }: std::ops::Range<usize>,
        out: &mut Vec<Finding>,
        scout: (usize, u32),
        anchored: bool,
        caches: &mut Caches<'d>,
    ) {
        let (scout_min, dense_runs) = scout;
        let Caches { scout: scout_cache, retry, .. } = caches;
        // Where findings are dense the scout's windows skip little and its DFA run is paid
        // twice; after a few such windows (or where the bytes ahead look dense before the
        // scout starts) the search goes on without it for a while.
        let (mut dense_until, mut short_skips, mut dense_span) = (from, 0_u32, DENSE_SPAN);
        // (`u32::MAX` short windows: never dense, the scout runs throughout, as a test asks.)
        let mut probe = dense_runs != u32::MAX;
        let mut at = from;
        while at < until {
            let mut scouting = at >= dense_until && until - at >= scout_min;
            if scouting && probe && self.scout.is_some() {
                probe = false;
                if looks_dense(&hay[at..until.min(at + DENSE_PROBE)]) {
                    (dense_until, scouting, probe) = (at + dense_span, false, true);
                    dense_span = (dense_span * 2).min(DENSE_SPAN_MAX);
                }
            }
            if scouting && let Some((dfa, pool)) = &self.scout {
                let (cache, idle) = scout_cache.get_or_insert_with(|| (pool.get(), None));
                match super::scout::scout(dfa, cache, idle, hay, at, until) {
                    super::scout::Scouted::From(w) => {
                        if w - at < DENSE_SKIP {
                            short_skips += 1;
                        } else {
                            (short_skips, dense_span) = (0, DENSE_SPAN);
                        }
                        if short_skips >= dense_runs {
                            (dense_until, short_skips, probe) = (w + dense_span, 0, true);
                            dense_span = (dense_span * 2).min(DENSE_SPAN_MAX);
                        }
                        at = w;
                    }
                    super::scout::Scouted::Nothing => break,
                }
            }
            // Where the scout is not used (dense or short text), the built-in set is searched
            // anchored at each place a match can start: no reverse search for each match's
            // start, and no pass over the bytes between those places.
            let next = match &self.scout {
                Some((dfa, pool)) if anchored && !scouting => {
                    let (cache, _) = scout_cache.get_or_insert_with(|| (pool.get(), None));
                    next_anchored(dfa, cache, hay, at, until)
                }
                _ => Err(()),
            };
            let (start, end, first) = match next {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(()) => {
                    let Some(m) = self.all.search(&Input::new(hay).range(at..)) else { break };
                    (m.start(), m.end(), m.pattern().as_usize())
                }
            };
            if start >= until {
                break;
            }
            at = self.judge(hay, (start, end, first), out, retry);
        }
    }

    /// Judges the match `start..end` of pattern `first`, the leftmost-first one from where the
    /// scan stands: its finding, if its validator (or another pattern's at the same start)
    /// accepts it, goes to `out`. Where the scan goes on.
    // Inlined, as `accept` is, into each scan that uses it.
    #[inline(always)]
    fn judge<'d>(
        &'d self,
        hay: &[u8],
        (start, end, first): (usize, usize, usize),
        out: &mut Vec<Finding>,
        retry: &mut Option<(PoolGuard<'d, Cache, CacheFn>, PatternSet)>,
    ) -> usize {
        let mut found = self.accept(hay, first, start, end);
        if found.is_none() {
            // Another pattern may match here where the first one's validator refused: try
            // those that match at this start, in priority order (all of them if the set
            // could not be worked out).
            let (cache, here) =
                retry.get_or_insert_with(|| (self.live_caches.get(), PatternSet::new(self.patterns.len())));
            let known = self.patterns_at(cache, hay, start, here);
            for pid in (0..self.patterns.len()).filter(|&p| p != first) {
                if known && !here.contains(pattern_id(pid)) {
                    continue;
                }
                let input = Input::new(hay).range(start..).anchored(Anchored::Yes);
                if let Some(m2) = self.alone[pid].search(&input)
                    && let Some(f) = self.accept(hay, pid, m2.start(), m2.end())
                {
                    found = Some(f);
                    break;
                }
            }
        }
        match found {
            Some(f) => {
                out.push(f);
                f.match_end.max(start + 1)
            }
            None => start + 1,
        }
    }

    /// [`Detector::scan_text`] over a value behind its key's prefix, `hay[..key_end]` (`name: `,
    /// see `Values`), with what `memo` kept from the last value behind the same prefix: where
    /// in the prefix a match could start and still be alive at its end, and the lazy DFA's
    /// state there. The search from those places goes on from that state; the rest of the
    /// prefix is not read again. The same findings as `scan_text`, which a property test
    /// holds it to.
    pub(crate) fn scan_keyed<'d>(
        &'d self,
        hay: &[u8],
        key_end: usize,
        out: &mut Vec<Finding>,
        caches: &mut Caches<'d>,
        memo: &mut KeyMemo,
    ) {
        // Longer texts are scouted, and a detector with custom entities does not search
        // anchored: `scan_text` as it is.
        let Some((dfa, pool)) = &self.scout else { return self.scan_text(hay, out, caches) };
        if hay.len() >= SCOUT_MIN || key_end > hay.len() {
            return self.scan_text(hay, out, caches);
        }
        if caches.memo_id == 0 {
            caches.memo_id = MEMO_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        }
        let id = caches.memo_id;
        let (cache, _) = caches.scout.get_or_insert_with(|| (pool.get(), None));
        if !memo.fits(id, cache.clear_count(), key_end) {
            memo.learn(dfa, cache, id, hay, key_end);
        }
        #[cfg(debug_assertions)]
        debug_assert_eq!(memo.prefix, &hay[..key_end], "a key memo holds one prefix's states");
        if !memo.usable {
            return self.scan_text(hay, out, caches);
        }
        let mut at = key_end;
        for &(c, sid) in &memo.alive {
            if cache.clear_count() != memo.clears {
                // The search from an earlier place filled the cache, which was cleared: the
                // states kept are gone. Nothing is in `out` yet.
                return self.scan_text(hay, out, caches);
            }
            match anchored_from(dfa, cache, hay, c..hay.len(), Anchored::Yes, sid, key_end) {
                Ok(Some((end, pid))) if end > c => {
                    at = self.judge(hay, (c, end, pid), out, &mut caches.retry);
                    break;
                }
                Ok(_) => {}
                // Nothing is in `out` yet: the whole search, as it would have run.
                Err(()) => return self.scan_text(hay, out, caches),
            }
        }
        if at < hay.len() {
            self.scan_with(hay, at..hay.len(), out, (SCOUT_MIN, DENSE_RUNS), true, caches);
        }
    }

    /// Every pattern with a match that starts at `start`, into `set`. False if the lazy DFA gave
    /// up (then `set` means nothing).
    fn patterns_at(&self, cache: &mut Cache, hay: &[u8], start: usize, set: &mut PatternSet) -> bool {
        set.clear();
        let input = Input::new(hay).range(start..).anchored(Anchored::Yes);
        let Ok(mut sid) = self.live.start_state_forward(cache, &input) else { return false };
        let mut note = |cache: &Cache, sid: regex_automata::hybrid::LazyStateID| {
            if sid.is_match() {
                for i in 0..self.live.match_len(cache, sid) {
                    set.insert(self.live.match_pattern(cache, sid, i));
                }
            }
        };
        for &b in &hay[start..] {
            match self.live.next_state(cache, sid, b) {
                Ok(next) => sid = next,
                Err(_) => return false,
            }
            note(cache, sid);
            if sid.is_dead() {
                return true;
            }
            if sid.is_quit() {
                return false;
            }
        }
        match self.live.next_eoi_state(cache, sid) {
            Ok(eoi) => note(cache, eoi),
            Err(_) => return false,
        }
        true
    }

    /// All findings in `text`, with those the headers of its text tables give their cells (see
    /// `tables.rs`).
    pub fn find_all(&self, text: &[u8]) -> Vec<Finding> {
        let mut out = Vec::new();
        self.scan(text, 0, text.len(), &mut out);
        super::tables::add_rows(self, text, 0, &mut out, |_| true);
        out
    }

    // Inlined into the scan: returned through memory, the finding was read back in one load
    // from the callee's smaller stores, which stalled the load (about 3 % of dense text).
    #[inline(always)]
    fn accept(&self, hay: &[u8], pid: usize, start: usize, end: usize) -> Option<Finding> {
        let p = &self.patterns[pid];
        let (mut vs, mut ve) = (start, end);
        if p.has_value {
            (vs, ve) = self.value_span(pid, hay, start, end);
        }
        let value = &hay[vs..ve];
        let before = &hay[vs.saturating_sub(LOOKBEHIND)..vs];
        let mut confidence = p.confidence;
        let mut entity = p.entity;
        let ok = match p.check {
            Check::None => true,
            Check::Ssn => v::ssn(value),
            Check::Card => v::card(value),
            Check::Npi => v::npi(value),
            Check::Dea => v::dea(value),
            Check::Iban => v::iban(value),
            Check::Vin => v::vin(value),
            Check::Imei => v::imei(value),
            Check::Ipv4 => v::ipv4(value) && !ends_with_digit_dot(before),
            Check::Ipv6 => v::ipv6(value) && !before.last().is_some_and(|b| b.is_ascii_hexdigit() || *b == b':'),
            Check::NumericDate => v::numeric_date(value),
            Check::WrittenDate => v::written_date(value),
            Check::Phone => {
                v::phone(value)
                    && !before.last().is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'+'))
            }
            Check::Zip => value.contains(&b'-') || zip_context(before),
            Check::HasDigit => {
                // A value that is itself a checksum-valid IBAN or card is labeled as such.
                if v::iban(value) {
                    entity = id("IBAN");
                } else if v::card(value) {
                    entity = id("CREDIT_CARD");
                }
                value.iter().any(u8::is_ascii_digit)
            }
            Check::Name => {
                let (first, last, _, not) = name_words(value)?;
                if first & FIRST_NAME != 0 || last & LAST_NAME != 0 {
                    confidence = confidence.max(0.9);
                } else if after_title(&hay[start..vs]) {
                    // A cue and a title (`seen by Dr. Smith`): as sure as the title alone.
                    confidence = confidence.max(TITLE_CONFIDENCE);
                }
                !not
            }
            Check::NamePair => {
                let (first, last, many, not) = name_words(value)?;
                if !many {
                    return None;
                }
                let (known_first, known_last) = (first & FIRST_NAME != 0, last & LAST_NAME != 0);
                if !(known_first && known_last) {
                    // One half known, the other a capitalized word that is not a common one.
                    confidence = 0.6;
                }
                (known_first || known_last) && !not
            }
            Check::Mac => value.iter().any(u8::is_ascii_digit),
            Check::Url => {
                while ve > vs + 1 && matches!(hay[ve - 1], b'.' | b',' | b';' | b':' | b'!' | b'?' | b')' | b'\'') {
                    ve -= 1;
                }
                true
            }
        };
        ok.then_some(Finding { entity, start: vs, end: ve, match_start: start, match_end: end, confidence })
    }

    /// The span of group `v` in the match `start..end` of pattern `pid`.
    ///
    /// The match takes the highest-priority path through the pattern: of the paths through the
    /// part before the value, the first (in priority order) after which the value matches at
    /// all, then the value's own first path. So when the part before the value, on its own,
    /// takes its first path to some `split` and the value matches anchored there, the value
    /// starts at `split` and ends where the match does (a split pattern has nothing but a `\b`
    /// after its value); the value's search stops at its first match state. Otherwise (a
    /// custom pattern whose value is nested or followed by more, or a prefix whose first path
    /// leaves no value) a capturing search decides.
    fn value_span(&self, pid: usize, hay: &[u8], start: usize, end: usize) -> (usize, usize) {
        if let (Some(split), Some(splits)) = (self.patterns[pid].split, &self.splits) {
            let mut caches = splits.caches.get();
            let (bc, vc) = &mut *caches;
            let one = Anchored::Pattern(split);
            if let Ok(Some((b, _))) = anchored_match(&splits.before, bc, hay, start..end, one)
                && has_anchored_match(&splits.value, vc, hay, b..end, one) == Ok(true)
            {
                return (b, end);
            }
        }
        // Bounded to the match, so the backtracker's visited set is the match's size, not the
        // rest of the haystack's (look-around still sees the bytes either side).
        let alone = &self.alone[pid];
        let mut caps = alone.create_captures();
        alone.search_captures(&Input::new(hay).range(start..end).anchored(Anchored::Yes), &mut caps);
        caps.get_group_by_name("v").map_or((start, end), |span| (span.start, span.end))
    }

    /// The first position in `from..hay.len()` (checking no further back than `hay.len() -
    /// horizon`) where a match could start and still need bytes after the end of `hay`; the end
    /// of `hay` if there is none. Text before that position is settled: more input cannot change
    /// what is found there.
    ///
    /// Only positions where an accepted finding could start are asked: with the scout's rule,
    /// those in the window of a trigger already here, and those the walk-back from the end
    /// reaches (a trigger still to come). Elsewhere a match may start, but it will be refused,
    /// and a refused match changes nothing after it.
    pub(crate) fn live_from(&self, cache: &mut Cache, hay: &[u8], from: usize, horizon: usize) -> usize {
        let n = hay.len();
        let lo = from.max(n.saturating_sub(horizon));
        // At most DENSE_WINDOWS trigger windows and the one at the end, on the stack: this
        // runs on every piece a stream receives.
        let mut windows = [(0, 0); DENSE_WINDOWS + 1];
        let mut len = 0;
        let mut dense = self.scout.is_none();
        let mut at = lo;
        while !dense && let Some(t) = super::scout::next_trigger(hay, at) {
            if len == DENSE_WINDOWS {
                // Dense text: the windows cover most of it, and cost more than they skip.
                dense = true;
                break;
            }
            // Every trigger in the same run of word bytes walks back to the same place: one
            // window to the end of the run.
            let mut end = t + 1;
            while end < n && super::scout::is_run(hay[end]) {
                end += 1;
            }
            windows[len] = (super::scout::walk_back(hay, t, lo), end);
            len += 1;
            at = end;
        }
        if dense {
            (windows[0], len) = ((lo, n), 1);
        } else {
            windows[len] = (super::scout::walk_back(hay, n, lo), n);
            len += 1;
            windows[..len].sort_unstable();
        }
        let mut done = lo;
        for &(start, end) in &windows[..len] {
            // The first place of a window is asked, then (with the built-in set) only the places
            // where a built-in match can start: one that starts elsewhere, in a run of e-mail
            // bytes, is live only if the match from where the run starts is.
            let mut p = start.max(done);
            while p < end {
                if self.is_live(cache, hay, p) {
                    return p;
                }
                p = match self.scout {
                    Some(_) => next_candidate(hay, p + 1, end).unwrap_or(end),
                    None => p + 1,
                };
            }
            done = done.max(end);
        }
        n
    }

    fn is_live(&self, cache: &mut Cache, hay: &[u8], p: usize) -> bool {
        let input = Input::new(hay).range(p..).anchored(Anchored::Yes);
        // A cache failure counts as live: holding back is always safe.
        let Ok(mut sid) = self.live.start_state_forward(cache, &input) else { return true };
        for &b in &hay[p..] {
            match self.live.next_state(cache, sid, b) {
                Ok(next) => sid = next,
                Err(_) => return true,
            }
            if sid.is_dead() {
                return false;
            }
            if sid.is_quit() {
                return true;
            }
        }
        !sid.is_dead()
    }
}

/// What the search found in a key's prefix (`name: `), for the next value behind the same
/// prefix (see [`Detector::scan_keyed`]): a document of records scans thousands of values
/// behind the same few keys.
#[derive(Debug, Default)]
pub(crate) struct KeyMemo {
    /// The caches the states are in (their [`Caches::memo_id`]), the scout cache's clear
    /// count then, and the prefix's length: a state is an index into one cache until that
    /// cache is cleared.
    cache: u64,
    clears: usize,
    key_end: usize,
    /// Whether the states can be used: no match ended in the prefix, and the DFA neither gave
    /// up nor cleared its cache while they were found.
    usable: bool,
    /// Each place in the prefix where the search tries a match (in order) and is still alive
    /// at its end, with the state there.
    alive: Vec<(usize, LazyStateID)>,
    /// The prefix itself, where debug assertions check that a memo is used with one prefix.
    #[cfg(debug_assertions)]
    prefix: Vec<u8>,
    /// The prefix as the caller writes it for the key, kept for it: written once, copied for
    /// each value after (empty until then).
    pub(crate) written: Vec<u8>,
}

/// Most places in a prefix a memo keeps; a prefix with more is searched as it is.
const MEMO_ALIVE: usize = 8;

impl KeyMemo {
    /// Whether the memo holds the states of a prefix of `key_end` bytes in this cache as it is.
    fn fits(&self, cache: u64, clears: usize, key_end: usize) -> bool {
        self.cache == cache && self.clears == clears && self.key_end == key_end && self.cache != 0
    }

    /// Walks `prefix` from each place where the search in [`next_anchored`] would try a match,
    /// keeping those still alive at its end.
    fn learn(&mut self, dfa: &DFA, cache: &mut Cache, id: u64, hay: &[u8], key_end: usize) {
        let clears = cache.clear_count();
        (self.cache, self.clears, self.key_end, self.usable) = (id, clears, key_end, false);
        self.alive.clear();
        #[cfg(debug_assertions)]
        {
            self.prefix = hay[..key_end.min(hay.len())].to_vec();
        }
        // Where the search tries a match in the prefix, and whether it tries one where the
        // value starts, depend on the value only when the prefix's last byte may begin a match
        // or looks at the byte after it; `: ` does neither.
        if key_end == 0 || START_CLASS[usize::from(hay[key_end - 1])] != 0 {
            return;
        }
        let prefix = &hay[..key_end];
        let mut next = if can_begin_at(prefix, 0) { Some(0) } else { next_candidate(prefix, 1, key_end) };
        while let Some(c) = next {
            let Ok(mut sid) = start_at(dfa, cache, prefix, c, Anchored::Yes) else { return };
            for &b in &prefix[c..] {
                if sid.is_tagged() && (sid.is_match() || sid.is_quit() || sid.is_dead()) {
                    break;
                }
                let Ok(n) = dfa.next_state(cache, sid, b) else { return };
                sid = n;
            }
            if sid.is_match() || sid.is_quit() {
                // A match in the prefix (a finding there moves the search on) or a DFA that
                // gave up: the search runs as it is.
                return;
            }
            if !sid.is_dead() {
                if self.alive.len() == MEMO_ALIVE {
                    return;
                }
                self.alive.push((c, sid));
            }
            next = next_candidate(prefix, c + 1, key_end);
        }
        // A cache cleared on the way holds none of the states found before.
        self.usable = cache.clear_count() == clears;
    }
}

/// Whether `before` (the match up to a name) ends with a title and the space after it.
fn after_title(before: &[u8]) -> bool {
    let Some(rest) =
        before.strip_suffix(b" ").or_else(|| before.strip_suffix(b"\t")).or_else(|| before.strip_suffix(b"\n"))
    else {
        return false;
    };
    let rest = rest.strip_suffix(b".").unwrap_or(rest);
    TITLES.iter().any(|t| {
        rest.strip_suffix(t.as_bytes()).is_some_and(|head| head.last().is_none_or(|b| !b.is_ascii_alphanumeric()))
    })
}

/// Whether at least one in [`DENSE_SHARE`] bytes of `ahead` is one the scout stops at (about:
/// it counts every capital, where the scout passes over one that starts a sentence).
fn looks_dense(ahead: &[u8]) -> bool {
    // Counted in bytes, 64 at a time, which the compiler does a vector at a time.
    let stops: usize = ahead
        .chunks(64)
        .map(|c| {
            let n = c.iter().fold(0_u8, |n, &b| {
                n + u8::from(b.wrapping_sub(b'0') < 10 || b.wrapping_sub(b'A') < 26 || b == b'@' || b == b':')
            });
            usize::from(n)
        })
        .sum();
    stops > 0 && stops * DENSE_SHARE >= ahead.len()
}

/// Bytes that may start a built-in match (`START_WORD`: where a word begins; `START_ANY`:
/// anywhere; `START_LOCAL`: where a run of e-mail local-part bytes begins). `START_PEEK`: only
/// before certain bytes (see [`starts_before`]).
const START_WORD: u8 = 1;
const START_ANY: u8 = 2;
const START_LOCAL: u8 = 4;
const START_PEEK: u8 = 8;
static START_CLASS: [u8; 256] = {
    let mut t = [0_u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b'_' {
            t[b] |= START_WORD;
        }
        if matches!(c, b'+' | b'(' | b':') {
            t[b] |= START_ANY;
        }
        if super::scout::is_run(c) {
            t[b] |= START_LOCAL;
        }
        if matches!(c, b'+' | b'(' | b':' | b'.' | b'%' | b'-') {
            t[b] |= START_PEEK;
        }
        b += 1;
    }
    t
};

/// Whether a built-in match can begin with the punctuation byte `hay[i]`, given the byte after
/// it. `:` begins only an IPv6 address (`::1`, `:a:`), `(` only a phone number's area code, `+`
/// a phone number or an e-mail address, and `.`, `%` or `-` only an e-mail address's local part
/// (which goes on to an `@`). In a JSON document most `:` and `.` are none of these. At the end
/// of `hay` the answer is yes: in a stream, the next byte may still come.
fn starts_before(hay: &[u8], i: usize) -> bool {
    let Some(&next) = hay.get(i + 1) else { return true };
    match hay[i] {
        b':' => next == b':' || next.is_ascii_hexdigit(),
        b'(' => matches!(next, b'2'..=b'9'),
        _ => next == b'@' || START_CLASS[usize::from(next)] & START_LOCAL != 0,
    }
}

/// The first place in `from..until` where a built-in pattern could start a match (given the
/// byte before `from`). Every built-in pattern begins with `\b` before a word byte, with `+`,
/// `(` or `:` (each before certain bytes: [`starts_before`]), or (the e-mail address, with no
/// `\b`) with a local-part byte — and its leftmost match there starts where that run of
/// local-part bytes begins. A property test compares the search with the meta regex's on
/// generated texts.
fn next_candidate(hay: &[u8], from: usize, until: usize) -> Option<usize> {
    let mut prev = if from == 0 { 0 } else { START_CLASS[usize::from(hay[from - 1])] };
    for (i, &b) in hay[from..until].iter().enumerate() {
        let c = START_CLASS[usize::from(b)];
        if (c & START_ANY != 0
            || (c & START_WORD != 0 && prev & START_WORD == 0)
            || (c & START_LOCAL != 0 && prev & START_LOCAL == 0))
            && (c & START_PEEK == 0 || starts_before(hay, from + i))
        {
            return Some(from + i);
        }
        prev = c;
    }
    None
}

/// Whether the only built-in match that can begin at `hay[i]` is an e-mail address: `.`, `%`,
/// `-`, and `+` before anything but a digit (see [`starts_before`]).
fn email_only(hay: &[u8], i: usize) -> bool {
    match hay[i] {
        b'.' | b'%' | b'-' => true,
        b'+' => !hay.get(i + 1).is_some_and(u8::is_ascii_digit),
        _ => false,
    }
}

/// Where the run of e-mail local-part bytes from `hay[i]` ends, if no `@` follows it (so no
/// address starts anywhere in it); `i` if one does, or if the run reaches the end of `hay`.
fn run_without_at(hay: &[u8], i: usize) -> usize {
    match hay[i..].iter().position(|&b| !super::scout::is_run(b)) {
        Some(k) if hay[i + k] != b'@' => i + k,
        _ => i,
    }
}

/// Whether a built-in match can begin at `hay[i]`, whatever comes before it.
fn can_begin_at(hay: &[u8], i: usize) -> bool {
    let c = START_CLASS[usize::from(hay[i])];
    c != 0 && (c & START_PEEK == 0 || starts_before(hay, i))
}

/// The start state of a search anchored (as `anchored` says) at `hay[at]`.
fn start_at(dfa: &DFA, cache: &mut Cache, hay: &[u8], at: usize, anchored: Anchored) -> Result<LazyStateID, ()> {
    let config = start::Config::new().anchored(anchored).look_behind(at.checked_sub(1).map(|i| hay[i]));
    dfa.start_state(cache, &config).map_err(|_| ())
}

/// The state after the byte that follows `hay[..end]`, or after the end of the text when there
/// is none: it settles a `\b` at `end`.
fn step_past(dfa: &DFA, cache: &mut Cache, hay: &[u8], end: usize, sid: LazyStateID) -> Result<LazyStateID, ()> {
    match hay.get(end) {
        Some(&b) => dfa.next_state(cache, sid, b),
        None => dfa.next_eoi_state(cache, sid),
    }
    .map_err(|_| ())
}

/// From the untagged state `sid` before `text[at]`, the known transitions between untagged
/// states, read from the cache without changing it (its table stays in registers): the last
/// untagged state, where it stands, and the transition out of it — tagged (a match, the dead
/// state, quit, or not computed yet) — or `None` at the end of `text`.
#[inline(always)]
fn walk_untagged(
    dfa: &DFA,
    cache: &Cache,
    text: &[u8],
    mut sid: LazyStateID,
    mut at: usize,
) -> (LazyStateID, usize, Option<LazyStateID>) {
    while let Some(&b) = text.get(at) {
        let next = dfa.next_state_untagged(cache, sid, b);
        if next.is_tagged() {
            return (sid, at, Some(next));
        }
        (sid, at) = (next, at + 1);
    }
    (sid, at, None)
}

/// The leftmost-first match that starts in `at..until`, found by an anchored search at each
/// candidate start: `(start, end, pattern)`. `Err` when the lazy DFA gave up.
fn next_anchored(
    dfa: &DFA,
    cache: &mut Cache,
    hay: &[u8],
    at: usize,
    until: usize,
) -> Result<Option<(usize, usize, usize)>, ()> {
    // `at` itself is tried when a match can begin with its byte: an unanchored search from there
    // (as after a finding or a refused match) may start an e-mail address in the middle of a run.
    let mut c = if !can_begin_at(hay, at) {
        match next_candidate(hay, at + 1, until) {
            Some(next) => next,
            None => return Ok(None),
        }
    } else {
        at
    };
    // The end of the last run of local-part bytes found to reach no `@`.
    let mut no_email_until = 0;
    while c < until {
        if email_only(hay, c) {
            // No e-mail address starts in a run that reaches no `@`: a psql rule line
            // (`------+------`) is one such run, and each `+` in it was a walk to its end.
            if c >= no_email_until {
                no_email_until = run_without_at(hay, c);
            }
            if c < no_email_until {
                match next_candidate(hay, c + 1, until) {
                    Some(next) => {
                        c = next;
                        continue;
                    }
                    None => break,
                }
            }
        }
        let start = start_at(dfa, cache, hay, c, Anchored::Yes)?;
        // Most tries (a lower-case word: the start of an e-mail address until it is not) end in
        // the dead state after a few known transitions: they are walked here, and the search
        // goes on from where this walk stopped only when it met anything else.
        let (sid, i, next) =
            if start.is_tagged() { (start, c, None) } else { walk_untagged(dfa, cache, hay, start, c) };
        let dead = next.is_some_and(|n| n.is_dead());
        let found = if dead { Ok(None) } else { anchored_from(dfa, cache, hay, c..hay.len(), Anchored::Yes, sid, i) };
        match found {
            Ok(Some((end, pid))) if end > c => return Ok(Some((c, end, pid))),
            Ok(_) => match next_candidate(hay, c + 1, until) {
                Some(next) => c = next,
                None => break,
            },
            Err(_) => return Err(()),
        }
    }
    Ok(None)
}

/// The leftmost-first match of `dfa` in `hay[span]` anchored at its start (as `anchored` says):
/// its end and pattern. `try_search_fwd` over the same span gives the same answer; this drives
/// the lazy DFA by hand because dense text asks for many searches of a few bytes each, where the
/// library's set-up for each search cost about as much as its steps. `Err` when the lazy DFA
/// gave up or quit (the library's error, not kept). It does not report its progress to the
/// cache (`Cache::search_start` and the rest): that only matters to a DFA configured with a
/// minimum cache clear count, and none here is.
fn anchored_match(
    dfa: &DFA,
    cache: &mut Cache,
    hay: &[u8],
    span: std::ops::Range<usize>,
    anchored: Anchored,
) -> Result<Option<(usize, usize)>, ()> {
    if span.start > span.end {
        return Ok(None);
    }
    let sid = start_at(dfa, cache, hay, span.start, anchored)?;
    let at = span.start;
    anchored_from(dfa, cache, hay, span, anchored, sid, at)
}

/// [`anchored_match`] going on from state `sid` before `hay[at]`, which the search reached
/// from its start state through no match state and without building a state.
fn anchored_from(
    dfa: &DFA,
    cache: &mut Cache,
    hay: &[u8],
    span: std::ops::Range<usize>,
    anchored: Anchored,
    mut sid: LazyStateID,
    mut at: usize,
) -> Result<Option<(usize, usize)>, ()> {
    let (end, clears) = (span.end, cache.clear_count());
    // The last match state and where its match ended. Its pattern is looked up once, at the
    // end: a match grows a byte at a time through match states, and each lookup reads the
    // state's own record.
    let mut found = None;
    let text = &hay[..end];
    let mut dead = false;
    while at < text.len() {
        let next = if sid.is_tagged() {
            dfa.next_state(cache, sid, text[at]).map_err(|_| ())?
        } else {
            let next;
            (sid, at, next) = walk_untagged(dfa, cache, text, sid, at);
            let Some(next) = next else { break };
            // Not computed yet: the library builds it.
            if next.is_unknown() { dfa.next_state(cache, sid, text[at]).map_err(|_| ())? } else { next }
        };
        if next.is_tagged() {
            // Matches are reported one byte late: this one ended before `text[at]`.
            if next.is_match() {
                found = Some((at, next));
            } else if next.is_dead() {
                dead = true;
                break;
            } else if next.is_quit() {
                return Err(());
            }
        }
        sid = next;
        at += 1;
    }
    if !dead {
        let last = step_past(dfa, cache, hay, end, sid)?;
        if last.is_match() {
            found = Some((end, last));
        } else if last.is_quit() {
            return Err(());
        }
    }
    match (found, anchored) {
        (None, _) => Ok(None),
        // Anchored at one pattern, a match is that pattern's: nothing to look up, and a cleared
        // cache does not matter (where the match ended stands).
        (Some((at, _)), Anchored::Pattern(pid)) => Ok(Some((at, pid.as_usize()))),
        (Some((at, sid)), _) if cache.clear_count() == clears => {
            Ok(Some((at, dfa.match_pattern(cache, sid, 0).as_usize())))
        }
        // The cache was cleared since, so the state is gone: the library's search, once.
        (Some(_), _) => search_again(dfa, cache, &Input::new(hay).range(span).anchored(anchored)),
    }
}

/// Whether `dfa` has any match in `hay[span]` anchored at its start (as `anchored` says): the
/// walk stops at the first match state, where [`anchored_match`] goes on to the end of the
/// leftmost-first one.
fn has_anchored_match(
    dfa: &DFA,
    cache: &mut Cache,
    hay: &[u8],
    span: std::ops::Range<usize>,
    anchored: Anchored,
) -> Result<bool, ()> {
    if span.start > span.end {
        return Ok(false);
    }
    let mut sid = start_at(dfa, cache, hay, span.start, anchored)?;
    for &b in &hay[span.clone()] {
        sid = dfa.next_state(cache, sid, b).map_err(|_| ())?;
        if sid.is_tagged() {
            if sid.is_match() || sid.is_dead() {
                return Ok(sid.is_match());
            }
            if sid.is_quit() {
                return Err(());
            }
        }
    }
    let last = step_past(dfa, cache, hay, span.end, sid)?;
    if last.is_quit() { Err(()) } else { Ok(last.is_match()) }
}

/// [`anchored_match`] by the library's search.
#[cold]
fn search_again(dfa: &DFA, cache: &mut Cache, input: &Input<'_>) -> Result<Option<(usize, usize)>, ()> {
    dfa.try_search_fwd(cache, input).map(|m| m.map(|m| (m.offset(), m.pattern().as_usize()))).map_err(|_| ())
}

fn pattern_id(pid: usize) -> regex_automata::PatternID {
    regex_automata::PatternID::new(pid).unwrap_or(regex_automata::PatternID::ZERO)
}

fn syntax_config() -> syntax::Config {
    syntax::Config::new().unicode(false).utf8(false)
}

fn regex_syntax_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if r"\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `regex` cut around its group `v`: what comes before the group, the group's contents and
/// what follows it, when the group sits at the top level and the pattern has no top-level
/// alternation (so the pattern is exactly the three in a row).
fn value_parts(regex: &str) -> Option<(&str, &str, &str)> {
    let open = regex.find("(?P<v>")?;
    let bytes = regex.as_bytes();
    let (mut depth, mut class, mut close, mut i) = (0_i32, false, None, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'[' if !class => class = true,
            b']' if class => class = false,
            _ if class => {}
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 && i > open && close.is_none() {
                    close = Some(i);
                }
            }
            b'|' if depth == 0 => return None,
            _ => {}
        }
        if i == open && depth != 1 {
            return None;
        }
        i += 1;
    }
    let close = close?;
    Some((&regex[..open], &regex[open + 6..close], &regex[close + 1..]))
}

/// `regex` cut into what comes before its group `v` and the group's contents with what follows
/// it (see [`value_parts`]), when nothing but a `\b` follows the group: the value then ends
/// where the match does. A leading `(?i)` applies to both halves.
fn split_at_value(regex: &str) -> Option<(String, String)> {
    let (before, value, after) = value_parts(regex)?;
    if !matches!(after, "" | r"\b") {
        return None;
    }
    let flags = if regex.starts_with("(?i)") { "(?i)" } else { "" };
    Some((before.to_owned(), format!("{flags}{value}{after}")))
}

/// Whether group `v` spans the whole of `regex` but for word-boundary assertions (and a leading
/// `(?i)`): `(?i)\b(?P<v>…)\b` and the like, whose value is the match.
fn value_is_whole(regex: &str) -> bool {
    value_parts(regex).is_some_and(|(before, _, after)| {
        matches!(before, "" | r"\b" | "(?i)" | r"(?i)\b") && matches!(after, "" | r"\b")
    })
}

fn ends_with_digit_dot(before: &[u8]) -> bool {
    matches!(before, [.., d, b'.'] if d.is_ascii_digit())
}

/// A five-digit number is a ZIP code after a state code (`MA 02115`, `Boston, MA, 02115`) or a
/// ZIP keyword (`zip: 02115`, `postal code 02115`).
fn zip_context(before: &[u8]) -> bool {
    // The last 24 bytes, lower case, on the stack: this runs for every five-digit number.
    let tail = &before[before.len().saturating_sub(24)..];
    let mut lower = [0_u8; 24];
    let lower = &mut lower[..tail.len()];
    for (l, b) in lower.iter_mut().zip(tail) {
        *l = b.to_ascii_lowercase();
    }
    // (`zipcode` holds `zip`.)
    if lower.windows(3).any(|w| w == b"zip") || lower.windows(6).any(|w| w == b"postal") {
        return true;
    }
    let trimmed: &[u8] = {
        let mut t = before;
        while let [rest @ .., b' ' | b',' | b'\t'] = t {
            t = rest;
        }
        t
    };
    match trimmed {
        [.., b0, s0, s1] if !b0.is_ascii_alphanumeric() => v::us_state(&[*s0, *s1]),
        [s0, s1] => v::us_state(&[*s0, *s1]),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
