//! Offline verification: recompute the hash chain from sequence 1, check every checkpoint's
//! signature and that it matches the chain, and check an exported anchor. The first break is named
//! by sequence number with what is wrong there.

use std::collections::BTreeMap;

use serde::Serialize;
use uuid::Uuid;

use super::JournalError;
use super::crypto::{GENESIS, chain_hash, hex, unhex};
use super::record::{CloseMeta, Hash, OpenMeta, RecordKind, decode_body, decode_envelope};
use super::store::{Checkpoint, Store, seq_from_key};

/// What to check beyond the journal itself.
#[derive(Debug, Default)]
pub struct VerifyOptions {
    /// A checkpoint exported earlier and kept elsewhere: detects a truncated or rewritten tail.
    pub anchor: Option<Checkpoint>,
    /// The public key every checkpoint must be signed with. Default: the key the journal was
    /// created with.
    pub public_key: Option<Vec<u8>>,
    /// The master key: with it, every session's wrapped data key must unwrap (a key swapped
    /// with another session's, or replaced, does not).
    pub master_key: Option<std::sync::Arc<super::crypto::MasterKey>>,
}

/// The first thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    /// Sequence number where the journal stops being trustworthy.
    pub seq: u64,
    /// What is wrong there.
    pub problem: String,
}

/// Result of a verification.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// True only if nothing is wrong.
    pub ok: bool,
    /// Records whose chain hash was recomputed and matched.
    pub records_verified: u64,
    /// Highest sequence number present.
    pub last_seq: u64,
    /// Chain hash of the last verified record (hex).
    pub last_hash: String,
    /// Sessions whose index runs and summary matched their records.
    pub sessions_verified: u64,
    /// Whether every remaining session data key was unwrapped with the master key.
    pub keys_unwrapped: bool,
    /// Of those, sealed sessions whose data key is gone (crypto-shredded): their records verify,
    /// their payloads can no longer be read.
    pub sessions_shredded: u64,
    /// Checkpoints whose signature and hash matched.
    pub checkpoints_verified: usize,
    /// Sequence number of the newest valid checkpoint.
    pub last_checkpoint_seq: Option<u64>,
    /// Records after the newest checkpoint (not yet covered by a signature).
    pub unsigned_tail: u64,
    /// Whether an anchor was given and matched.
    pub anchor_verified: Option<bool>,
    /// Public key the checkpoints were checked against (hex).
    pub public_key: Option<String>,
    /// Where that key came from: `given` (`--public-key`, independent of the journal) or
    /// `journal` (recorded in the database itself: proves integrity against accidents and
    /// against anyone without the signing key, but a key kept elsewhere is the stronger check).
    pub public_key_source: &'static str,
    /// The first break of the chain, checkpoints or anchor, if any.
    pub first_break: Option<Break>,
    /// The first place where the session index or a session summary (which `replay` and
    /// `sessions` read, and which are not in the chain) disagrees with the records; checked when
    /// the chain is intact.
    pub index_break: Option<Break>,
}

/// Verifies the whole journal.
pub fn verify(store: &Store, opts: &VerifyOptions) -> Result<VerifyReport, JournalError> {
    let trusted_key = match &opts.public_key {
        Some(k) => Some(k.clone()),
        None => store.public_key()?,
    };
    // Checkpoints with a bad signature or the wrong key are breaks at their sequence number.
    let mut first_break: Option<Break> = None;
    let mut expected: BTreeMap<u64, Hash> = BTreeMap::new();
    let mut signed: BTreeMap<u64, Checkpoint> = BTreeMap::new();
    for (stored_at, cp) in store.checkpoint_entries()? {
        let cp = match cp {
            Ok(cp) if cp.seq == stored_at => cp,
            Ok(cp) => {
                let problem = format!("the checkpoint stored for record {stored_at} speaks for record {}", cp.seq);
                note(Break { seq: stored_at.min(cp.seq), problem }, &mut first_break);
                continue;
            }
            Err(problem) => {
                note(Break { seq: stored_at, problem }, &mut first_break);
                continue;
            }
        };
        if trusted_key.is_none() {
            let problem = "the journal's signing public key is missing from its metadata, so no checkpoint can be \
                           trusted; pass --public-key";
            note(Break { seq: cp.seq, problem: problem.into() }, &mut first_break);
            continue;
        }
        if let Some(key) = &trusted_key
            && unhex(&cp.public_key).as_deref() != Some(key.as_slice())
        {
            note(Break { seq: cp.seq, problem: "checkpoint is signed by an untrusted key".into() }, &mut first_break);
            continue;
        }
        match cp.check_signature() {
            Ok(hash) => {
                expected.insert(cp.seq, hash);
                signed.insert(cp.seq, cp);
            }
            Err(why) => note(Break { seq: cp.seq, problem: why.into() }, &mut first_break),
        }
    }
    // Each checkpoint names the one before it: a deleted checkpoint is missed.
    for cp in signed.values() {
        if cp.version >= 2 && cp.prev > 0 && !signed.contains_key(&cp.prev) {
            let problem = format!("the checkpoint of record {}, which checkpoint {} follows, is gone", cp.prev, cp.seq);
            note(Break { seq: cp.prev, problem }, &mut first_break);
        }
    }
    let mut anchor_hash = None;
    if let Some(anchor) = &opts.anchor {
        if let Some(key) = &trusted_key
            && unhex(&anchor.public_key).as_deref() != Some(key.as_slice())
        {
            let problem = "anchor is signed by a different key than the journal".into();
            note(Break { seq: anchor.seq, problem }, &mut first_break);
        }
        match anchor.check_signature() {
            Ok(hash) => anchor_hash = Some((anchor.seq, hash)),
            Err(why) => note(Break { seq: anchor.seq, problem: format!("anchor: {why}") }, &mut first_break),
        }
    }

    let mut prev = GENESIS;
    let mut next_seq = 1u64;
    let mut verified = 0u64;
    let mut checkpoints_verified = 0usize;
    let mut last_checkpoint_seq = None;
    let mut anchor_verified = opts.anchor.as_ref().map(|_| false);
    for item in store.records()? {
        if first_break.as_ref().is_some_and(|b| b.seq < next_seq) {
            break;
        }
        let (key, value) = match item {
            Ok(kv) => kv,
            Err(e) => {
                note(Break { seq: next_seq, problem: format!("the records cannot be read: {e}") }, &mut first_break);
                break;
            }
        };
        let Some(seq) = seq_from_key(&key) else {
            note(Break { seq: next_seq, problem: format!("malformed record key {}", hex(&key)) }, &mut first_break);
            break;
        };
        if seq != next_seq {
            let problem = if seq > next_seq {
                format!("record {next_seq} is missing (the next record present is {seq})")
            } else {
                format!("record {seq} appears out of order")
            };
            note(Break { seq: next_seq, problem }, &mut first_break);
            break;
        }
        let env = match decode_envelope(&value) {
            Ok(env) => env,
            Err(e) => {
                note(Break { seq, problem: format!("unreadable record: {e}") }, &mut first_break);
                break;
            }
        };
        let hash = chain_hash(&prev, seq, &env.body);
        if hash != env.hash {
            let problem = "hash mismatch: the record was altered, moved, or a record before it was replaced";
            note(Break { seq, problem: problem.into() }, &mut first_break);
            break;
        }
        if let Err(e) = decode_body(&env.body) {
            note(Break { seq, problem: format!("record body does not parse: {e}") }, &mut first_break);
            break;
        }
        if let Some(want) = expected.get(&seq) {
            if *want != hash {
                let problem = "a signed checkpoint's hash differs from the chain: the journal was rewritten";
                note(Break { seq, problem: problem.into() }, &mut first_break);
                break;
            }
            checkpoints_verified += 1;
            last_checkpoint_seq = Some(seq);
        }
        if let Some((aseq, ahash)) = anchor_hash
            && aseq == seq
        {
            if ahash != hash {
                let problem = "the anchor's hash differs from the chain: the journal was rewritten";
                note(Break { seq, problem: problem.into() }, &mut first_break);
                break;
            }
            anchor_verified = Some(true);
        }
        prev = hash;
        verified += 1;
        next_seq = seq + 1;
    }
    let last_seq = next_seq - 1;
    // Signed statements about records that are not there: the tail was cut.
    let vouched = expected.range(next_seq..).next().map(|(s, _)| (*s, "a checkpoint"));
    let vouched = vouched.or(anchor_hash.filter(|(s, _)| *s >= next_seq).map(|(s, _)| (s, "the anchor")));
    if let Some((seq, what)) = vouched {
        let problem =
            format!("{what} vouches for record {seq} but the journal ends at {last_seq}: the tail was truncated");
        note(Break { seq: next_seq, problem }, &mut first_break);
    }
    // More unsigned records than the signing gateway leaves: later checkpoints were deleted.
    let newest = signed.range(..=last_seq).next_back().map(|(_, cp)| cp);
    if let Some(problem) = unsigned_tail_problem(newest, last_seq, FIRST_CHECKPOINT_MAX) {
        let after = newest.map_or(0, |cp| cp.seq);
        note(Break { seq: after + 1, problem }, &mut first_break);
    }
    // The index is held against the records only where the chain vouches for them.
    let mut index_break = None;
    let (sessions_verified, sessions_shredded) =
        if first_break.is_none() { check_index(store, last_seq, opts, &mut index_break)? } else { (0, 0) };
    Ok(VerifyReport {
        ok: first_break.is_none() && index_break.is_none() && anchor_verified != Some(false),
        sessions_verified,
        sessions_shredded,
        keys_unwrapped: opts.master_key.is_some() && first_break.is_none() && index_break.is_none(),
        index_break,
        records_verified: verified,
        last_seq,
        last_hash: hex(&prev),
        checkpoints_verified,
        last_checkpoint_seq,
        unsigned_tail: last_seq - last_checkpoint_seq.unwrap_or(0),
        anchor_verified,
        public_key: trusted_key.as_deref().map(hex),
        public_key_source: if opts.public_key.is_some() { "given" } else { "journal" },
        first_break,
    })
}

/// Keeps `b` if it comes before the break found so far.
fn note(b: Break, first: &mut Option<Break>) {
    if first.as_ref().is_none_or(|f| b.seq < f.seq) {
        *first = Some(b);
    }
}

/// What a session's own records say, to hold its summary against.
struct Seen {
    id: Uuid,
    first_seq: u64,
    open: Option<(i64, OpenMeta)>,
    close: Option<(i64, CloseMeta)>,
}

/// Checks the session index and the summaries against records `1..=last_seq` (the chain already
/// vouches for those; neither the index nor the summaries are in the chain). `replay` and
/// `sessions` read a session through them, so an edit there could hide a record or change what
/// is shown without touching the chain: every record must be in exactly one run of its own
/// session, and every summary must say what its session's open and close records say. Returns
/// the number of sessions that matched.
fn check_index(
    store: &Store,
    last_seq: u64,
    opts: &VerifyOptions,
    first_break: &mut Option<Break>,
) -> Result<(u64, u64), JournalError> {
    let words = usize::try_from(last_seq / 64 + 1).map_err(|_| JournalError::Index("journal too large".into()))?;
    let mut indexed = vec![0u64; words];
    let mut sessions: Vec<Uuid> = Vec::new();
    // (sessions verified, of which shredded)
    let mut counts = (0u64, 0u64);
    let mut current: Option<Seen> = None;
    let mut previous_end = 0u64;
    let finish =
        |seen: Option<Seen>, first_break: &mut Option<Break>, counts: &mut (u64, u64)| -> Result<(), JournalError> {
            let Some(seen) = seen else { return Ok(()) };
            let verdict = match summary_problem(store, &seen)? {
                Some(problem) => Err(problem),
                None => key_state(store, &seen, opts.master_key.as_deref())?,
            };
            match verdict {
                Err(problem) => note(Break { seq: seen.first_seq, problem }, first_break),
                Ok(shredded) => {
                    counts.0 += 1;
                    counts.1 += u64::from(shredded);
                }
            }
            Ok(())
        };
    for run in store.index_runs()? {
        let (id, first, count) = match run? {
            Ok(run) => run,
            Err(key) => {
                let problem = format!("malformed session index entry {}", hex(&key));
                note(Break { seq: 1, problem }, first_break);
                continue;
            }
        };
        if current.as_ref().is_none_or(|c| c.id != id) {
            finish(current.take(), first_break, &mut counts)?;
            current = Some(Seen { id, first_seq: first, open: None, close: None });
            sessions.push(id);
            previous_end = 0;
        }
        if first > last_seq {
            // Written after the records read above (a running gateway), or pointing past them.
            continue;
        }
        let end = first.saturating_add(u64::from(count));
        if end - 1 > last_seq || first <= previous_end && previous_end > 0 || first == 0 {
            let problem = format!("session {id}: index run {first}+{count} overlaps another or passes the last record");
            note(Break { seq: first.max(1), problem }, first_break);
            continue;
        }
        previous_end = end - 1;
        for seq in first..end {
            let (word, bit) = ((seq / 64) as usize, seq % 64);
            if indexed[word] & (1 << bit) != 0 {
                note(Break { seq, problem: format!("record {seq} is in the index twice") }, first_break);
                continue;
            }
            indexed[word] |= 1 << bit;
            let Some(value) = store.record(seq)? else { continue };
            let Ok(record) = decode_envelope(&value).and_then(|env| decode_body(&env.body)) else { continue };
            if record.session != id {
                let problem = format!("record {seq} is indexed under session {id}, but belongs to {}", record.session);
                note(Break { seq, problem }, first_break);
                continue;
            }
            if let Some(seen) = current.as_mut() {
                match record.kind {
                    RecordKind::SessionOpen(meta) if seen.open.is_none() => seen.open = Some((record.time_us, meta)),
                    RecordKind::SessionClose(meta) => seen.close = Some((record.time_us, meta)),
                    _ => {}
                }
            }
        }
    }
    finish(current.take(), first_break, &mut counts)?;
    for seq in 1..=last_seq {
        if indexed[(seq / 64) as usize] & (1 << (seq % 64)) == 0 {
            let problem = format!("record {seq} is in no session's index: replay and `sessions` would not show it");
            note(Break { seq, problem }, first_break);
            break;
        }
    }
    for id in store.summary_ids()? {
        let problem = match id? {
            Err(key) => format!("malformed session summary key {}", hex(&key)),
            Ok(id) if sessions.binary_search(&id).is_err() => format!("session {id} has a summary but no records"),
            Ok(_) => continue,
        };
        note(Break { seq: last_seq.max(1), problem }, first_break);
    }
    Ok(counts)
}

/// Whether a session's data key is gone (`Ok(true)`: shredded, its records still verify and its
/// payloads are gone by design), or what is wrong with it: the key is not in the chain either,
/// and one that is not a wrapped key was altered. Sessions without sealed payloads have none.
fn key_state(
    store: &Store,
    seen: &Seen,
    master: Option<&super::crypto::MasterKey>,
) -> Result<Result<bool, String>, JournalError> {
    if !seen.open.as_ref().is_some_and(|(_, o)| o.sealed) {
        return Ok(Ok(false));
    }
    Ok(match store.wrapped_key(&seen.id)? {
        None => Ok(true),
        Some(k) if !super::crypto::MasterKey::well_formed(&k) => {
            Err(format!("session {}: its wrapped data key is malformed", seen.id))
        }
        // The wrap is bound to the session id: another session's key does not open here.
        Some(k) if master.is_some_and(|m| m.unwrap_session_key(seen.id.as_bytes(), &k).is_err()) => Err(format!(
            "session {}: its data key does not unwrap under the master key (swapped with another \
             session's, or replaced)",
            seen.id
        )),
        Some(_) => Ok(false),
    })
}

/// What is wrong with a session's summary, held against its open and close records.
fn summary_problem(store: &Store, seen: &Seen) -> Result<Option<String>, JournalError> {
    let id = seen.id;
    let summary = match store.session(&id) {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Ok(Some(format!("session {id} has records but no summary: `sessions list` would not show it")));
        }
        Err(JournalError::Index(e)) => return Ok(Some(format!("session {id}: summary does not parse: {e}"))),
        Err(e) => return Err(e),
    };
    let Some((opened_us, open)) = &seen.open else {
        return Ok(Some(format!("session {id} has no session-open record in its index")));
    };
    let differs = |what: &str| Ok(Some(format!("session {id}: the summary's {what} differs from its records")));
    if summary.id != id {
        return differs("id");
    }
    if (&summary.route, &summary.protocol, &summary.client_addr, &summary.principal)
        != (&open.route, &open.protocol, &open.client_addr, &open.principal)
    {
        return differs("route, protocol, caller or principal");
    }
    if summary.opened_us != *opened_us {
        return differs("start time");
    }
    match &seen.close {
        None if summary.closed_us.is_some() => differs("end (it has no session-close record)"),
        None => Ok(None),
        Some((closed_us, close)) => {
            let same = summary.closed_us == Some(*closed_us)
                && summary.close_reason.as_deref() == Some(close.reason.as_str())
                && (summary.bytes_from_client, summary.bytes_from_upstream)
                    == (close.bytes_from_client, close.bytes_from_upstream);
            if same { Ok(None) } else { differs("end, reason or byte counts") }
        }
    }
}

/// What is wrong with `cp` as the newest checkpoint of the journal in `store`, if anything: a bad
/// signature, another key than `key`, or a record at its sequence number that is gone, or whose
/// hash (as stored, and as its body and the record before it give it) is not the one signed. The
/// gateway checks this before it appends, and `journal checkpoint --export` before it exports.
/// The most records a journal with no checkpoint can hold when its gateway runs with the
/// default checkpoint interval (10,000 records) and queue depth (8,192, or 1,024 at least): it
/// signs its first checkpoint by then. (A gateway configured with a longer interval states its own bound in
/// each checkpoint; until its first, `verify` holds it to this one.)
pub const FIRST_CHECKPOINT_MAX: u64 = 10_000 + 8_192;

/// Why the records after the newest checkpoint (`None`: there is none) are more than the
/// gateway that signed it leaves unsigned, if they are: checkpoints after it were deleted, or
/// records appended by someone else. A version 1 checkpoint states no bound.
pub fn unsigned_tail_problem(newest: Option<&Checkpoint>, last_seq: u64, no_checkpoint_max: u64) -> Option<String> {
    match newest {
        Some(cp) if cp.version >= 2 && cp.unsigned_max > 0 => {
            (last_seq.saturating_sub(cp.seq) > cp.unsigned_max).then(|| {
                format!(
                    "{} records follow the newest checkpoint (of record {}), whose gateway leaves at most {} \
                     unsigned: later checkpoints were deleted, or records added",
                    last_seq - cp.seq,
                    cp.seq,
                    cp.unsigned_max
                )
            })
        }
        Some(_) => None,
        None => (last_seq > no_checkpoint_max).then(|| {
            format!(
                "there is no checkpoint, but {last_seq} records: a gateway signs its first within \
                 {no_checkpoint_max}, so the checkpoints were deleted"
            )
        }),
    }
}

pub fn checkpoint_problem(store: &Store, cp: &Checkpoint, key: &[u8]) -> Result<Option<String>, JournalError> {
    let seq = cp.seq;
    let signed = match cp.check_signature() {
        Ok(h) => h,
        Err(e) => return Ok(Some(format!("checkpoint {seq}: {e}"))),
    };
    if unhex(&cp.public_key).as_deref() != Some(key) {
        return Ok(Some(format!("checkpoint {seq} was signed by another key")));
    }
    let hash_at = |s: u64| -> Result<Option<(Hash, Vec<u8>)>, JournalError> {
        match store.record(s)? {
            None => Ok(None),
            Some(v) => {
                let env = decode_envelope(&v).map_err(|source| JournalError::Record { seq: s, source })?;
                Ok(Some((env.hash, env.body.to_vec())))
            }
        }
    };
    let Some((stored, body)) = hash_at(seq)? else {
        let end = store.last_record()?.map_or(0, |(s, _)| s);
        return Ok(Some(format!(
            "checkpoint {seq} signs a record that is gone (the journal ends at {end}): its tail was cut"
        )));
    };
    let prev = match seq.checked_sub(1).filter(|&p| p > 0) {
        None => GENESIS,
        Some(p) => match hash_at(p)? {
            Some((h, _)) => h,
            None => return Ok(Some(format!("record {p}, before checkpoint {seq}, is gone"))),
        },
    };
    if stored != signed || chain_hash(&prev, seq, &body) != signed {
        return Ok(Some(format!("record {seq} is not the record checkpoint {seq} signed")));
    }
    Ok(None)
}
