//! `airlock journal verify|checkpoint|public-key`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use super::JournalArgs;
use crate::journal::crypto::{hex, unhex};
use crate::journal::store::Checkpoint;
use crate::journal::verify::{VerifyOptions, verify as verify_journal};

pub(super) fn verify(
    args: &JournalArgs,
    json: bool,
    anchor: Option<&Path>,
    public_key: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let (store, master_path) = args.open()?;
    // The master key, when it can be read here: then every session key must unwrap. (An
    // auditor may not be allowed to read it: the keys are then checked for form only, and the
    // report says so.)
    let master_key = match crate::journal::crypto::MasterKey::load_or_create(&master_path, false) {
        Ok(key) => Some(std::sync::Arc::new(key)),
        Err(e) => {
            if master_path.exists() {
                eprintln!(
                    "note: the master key {} cannot be read ({e}); session keys are checked for form only",
                    master_path.display()
                );
            }
            None
        }
    };
    let anchor = anchor
        .map(|p| -> anyhow::Result<Checkpoint> {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read anchor {}", p.display()))?;
            serde_json::from_str(&text).with_context(|| format!("{} is not an exported checkpoint", p.display()))
        })
        .transpose()?;
    let public_key = public_key
        .map(|p| -> anyhow::Result<Vec<u8>> {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read public key {}", p.display()))?;
            unhex(&text)
                .filter(|k| k.len() == 32)
                .with_context(|| format!("{} does not hold a 32-byte hex key", p.display()))
        })
        .transpose()?;
    let report = verify_journal(&store, &VerifyOptions { anchor, public_key, master_key })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if let Some(b) = &report.first_break {
        println!("journal BROKEN at seq {}: {}", b.seq, b.problem);
        println!("  records verified before the break: {}", report.records_verified);
    } else if report.anchor_verified == Some(false) {
        println!("journal BROKEN: the anchor does not match the journal");
    } else if let Some(b) = &report.index_break {
        println!("journal index BROKEN at seq {}: {}", b.seq, b.problem);
        println!(
            "  the {} records themselves verified; `replay` and `sessions` read them through this index",
            report.records_verified
        );
    } else {
        println!(
            "journal intact: {} records in {} sessions, {} checkpoints verified (last at seq {}), {} records after it",
            report.records_verified,
            report.sessions_verified,
            report.checkpoints_verified,
            report.last_checkpoint_seq.map_or_else(|| "-".into(), |s| s.to_string()),
            report.unsigned_tail,
        );
        if report.sessions_shredded > 0 {
            println!(
                "  {} sessions crypto-shredded (their records verify; their payloads are gone)",
                report.sessions_shredded
            );
        }
        if report.anchor_verified == Some(true) {
            println!("  anchor matched");
        }
        if report.keys_unwrapped {
            println!("  every session data key unwrapped with the master key");
        } else {
            println!("  session data keys checked for form only (no master key here; pass --master-key)");
        }
        println!("  head hash {}", report.last_hash);
        if let Some(k) = &report.public_key {
            println!(
                "  signing key {k} ({})",
                if report.public_key_source == "given" {
                    "given with --public-key"
                } else {
                    "as recorded in the journal; pass --public-key with a copy kept elsewhere for an independent check"
                }
            );
        }
    }
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub(super) fn checkpoint(args: &JournalArgs, export: Option<&Path>) -> anyhow::Result<ExitCode> {
    let (store, _) = args.open()?;
    let cp = store.last_checkpoint()?.context(
        "the journal has no checkpoint yet (one is signed every N records, every T seconds and at shutdown)",
    )?;
    // An anchor is kept as evidence: only one that holds is exported.
    let key = store.public_key()?.context("the journal has no signing key recorded")?;
    if let Some(problem) = crate::journal::verify::checkpoint_problem(&store, &cp, &key)? {
        anyhow::bail!("{problem}; run `airlock journal verify`");
    }
    let json = serde_json::to_string_pretty(&cp)?;
    match export {
        Some(path) => {
            std::fs::write(path, format!("{json}\n")).with_context(|| format!("cannot write {}", path.display()))?;
            println!("checkpoint at seq {} written to {}", cp.seq, path.display());
        }
        None => println!("{json}"),
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn public_key(args: &JournalArgs, export: Option<&Path>) -> anyhow::Result<ExitCode> {
    let (store, _) = args.open()?;
    let key = hex(&store.public_key()?.context("the journal has no signing key recorded")?);
    match export {
        Some(path) => {
            std::fs::write(path, format!("{key}\n")).with_context(|| format!("cannot write {}", path.display()))?;
            println!("public key written to {}", path.display());
        }
        None => println!("{key}"),
    }
    Ok(ExitCode::SUCCESS)
}
