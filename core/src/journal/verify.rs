//! Offline verification: recompute the hash chain from sequence 1, check every checkpoint's
//! signature and that it matches the chain, and check an exported anchor. The first break is named
//! by sequence number with what is wrong there.

use std::collections::BTreeMap;

use serde::Serialize;

use super::JournalError;
use super::crypto::{GENESIS, chain_hash, hex, unhex};
use super::record::{Hash, decode_body, decode_envelope};
use super::store::{Checkpoint, Store, seq_from_key};

/// What to check beyond the journal itself.
#[derive(Debug, Default)]
pub struct VerifyOptions {
    /// A checkpoint exported earlier and kept elsewhere: detects a truncated or rewritten tail.
    pub anchor: Option<Checkpoint>,
    /// The public key every checkpoint must be signed with. Default: the key the journal was
    /// created with.
    pub public_key: Option<Vec<u8>>,
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
    /// The first break, if any.
    pub first_break: Option<Break>,
}

/// Verifies the whole journal.
pub fn verify(store: &Store, opts: &VerifyOptions) -> Result<VerifyReport, JournalError> {
    let trusted_key = match &opts.public_key {
        Some(k) => Some(k.clone()),
        None => store.public_key()?,
    };
    // Checkpoints with a bad signature or the wrong key are breaks at their sequence number.
    let mut first_break: Option<Break> = None;
    let note = |b: Break, first: &mut Option<Break>| {
        if first.as_ref().is_none_or(|f| b.seq < f.seq) {
            *first = Some(b);
        }
    };
    let mut expected: BTreeMap<u64, Hash> = BTreeMap::new();
    for cp in store.checkpoints()? {
        if let Some(key) = &trusted_key
            && unhex(&cp.public_key).as_deref() != Some(key.as_slice())
        {
            note(Break { seq: cp.seq, problem: "checkpoint is signed by an untrusted key".into() }, &mut first_break);
            continue;
        }
        match cp.check_signature() {
            Ok(hash) => {
                expected.insert(cp.seq, hash);
            }
            Err(why) => note(Break { seq: cp.seq, problem: why.into() }, &mut first_break),
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
        let (key, value) = item?;
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
    Ok(VerifyReport {
        ok: first_break.is_none() && anchor_verified != Some(false),
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
