//! `airlock config check --config FILE`: startup minus binding.

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;
use crate::journal::crypto::{MasterKey, SigningKey};

pub(super) fn check(config: &Path) -> anyhow::Result<ExitCode> {
    let settings = Config::load(config)?.build()?;
    let j = &settings.journal;
    // Keys that exist must load; missing ones are created on first start.
    if j.signing_key.exists() {
        SigningKey::load_or_create(&j.signing_key, false)?;
    }
    if j.encrypt && j.master_key.exists() {
        MasterKey::load_or_create(&j.master_key, false)?;
    }
    println!("{}: ok", config.display());
    println!("  journal: {} ({:?})", j.data_dir.display(), j.durability);
    for r in &settings.routes {
        println!(
            "  route {}: {} -> {} ({}{}{})",
            r.name,
            r.listen,
            r.upstream,
            r.protocol.as_str(),
            if r.tls.is_some() { ", client TLS" } else { "" },
            if r.upstream_tls.is_some() { ", upstream TLS" } else { "" },
        );
    }
    if let Some(a) = settings.admin {
        println!("  admin: http://{a}/metrics");
    }
    Ok(ExitCode::SUCCESS)
}
