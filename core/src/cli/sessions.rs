//! `airlock sessions list|show`.

use std::process::ExitCode;

use anyhow::Context as _;

use super::{JournalArgs, parse_session_id};
use crate::journal::read::{SessionFilter, list_sessions, session_records};
use crate::journal::record::RecordKind;
use crate::time::{format_us, now_us, parse_point};

pub(super) fn list(
    args: &JournalArgs,
    route: Option<String>,
    principal: Option<String>,
    since: Option<&str>,
    until: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let now = now_us();
    let point = |s: Option<&str>, flag: &str| {
        s.map(|s| parse_point(s, now).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))).transpose()
    };
    let filter = SessionFilter { route, since_us: point(since, "since")?, until_us: point(until, "until")?, principal };
    let (store, _) = args.open()?;
    let sessions = list_sessions(&store, &filter)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&sessions)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<36}  {:<27}  {:>10}  {:<12}  {:<21}  {:<10}  {:>9}  {:>9}  END",
        "SESSION", "STARTED", "DURATION", "ROUTE", "CLIENT", "PRINCIPAL", "IN", "OUT"
    );
    for s in &sessions {
        let duration = s
            .closed_us
            .map_or_else(|| "open".into(), |c| format!("{:.3}s", c.saturating_sub(s.opened_us) as f64 / 1e6));
        println!(
            "{:<36}  {:<27}  {:>10}  {:<12}  {:<21}  {:<10}  {:>9}  {:>9}  {}",
            s.id,
            format_us(s.opened_us),
            duration,
            s.route,
            s.client_addr,
            s.principal,
            s.bytes_from_client,
            s.bytes_from_upstream,
            s.close_reason.as_deref().unwrap_or("-"),
        );
    }
    eprintln!("{} session(s)", sessions.len());
    Ok(ExitCode::SUCCESS)
}

pub(super) fn show(args: &JournalArgs, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let id = parse_session_id(id)?;
    let (store, master) = args.open()?;
    let summary = store.session(&id)?.with_context(|| format!("no session {id} in the journal"))?;
    let records = session_records(&store, &id, Some(&master))?;
    let mut open = None;
    let mut upstream = None;
    let mut close = None;
    let mut frames = [0usize; 2];
    let mut decisions = Vec::new();
    for r in &records {
        match &r.record.kind {
            RecordKind::SessionOpen(m) => open = Some(m.clone()),
            RecordKind::UpstreamConnected(m) => upstream = Some(m.clone()),
            RecordKind::SessionClose(m) => close = Some(m.clone()),
            RecordKind::Data(f) => frames[f.direction as usize] += 1,
            RecordKind::Decision(m) => decisions.push(m.clone()),
        }
    }
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    if json {
        let v = serde_json::json!({
            "summary": summary,
            "open": open,
            "upstream": upstream,
            "close": close,
            "decisions": decisions,
            "records": seqs.len(),
            "first_seq": seqs.first(),
            "last_seq": seqs.last(),
            "data_frames_from_client": frames[0],
            "data_frames_from_upstream": frames[1],
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("session    {}", summary.id);
    println!("route      {} ({})", summary.route, summary.protocol);
    println!("client     {}", summary.client_addr);
    println!("principal  {}", summary.principal);
    println!("opened     {}", format_us(summary.opened_us));
    if let Some(o) = &open {
        println!("upstream   {}", o.upstream);
        if let Some(t) = &o.tls {
            println!("client TLS {} {} sni={}", t.version, t.cipher_suite, t.server_name.as_deref().unwrap_or("-"));
        }
        println!("sealed     {}", if o.sealed { "yes (per-session AES-256-GCM key)" } else { "no" });
        if let Some(i) = &o.identity {
            println!("roles      {}", if i.roles.is_empty() { "(none)".into() } else { i.roles.join(", ") });
        }
        if o.break_glass {
            println!("BREAK-GLASS emergency access: every record of this session is marked");
        }
    }
    for d in &decisions {
        println!("decision   {} {}: {} by `{}` ({})", d.phase, d.request, d.effect, d.rule, d.reason);
    }
    if let Some(u) = &upstream {
        print!("connected  {}", u.addr);
        if let Some(t) = &u.tls {
            print!(" over {} {} name={}", t.version, t.cipher_suite, t.server_name.as_deref().unwrap_or("-"));
        }
        println!();
    }
    match (&summary.closed_us, &close) {
        (Some(c), Some(m)) => {
            println!("closed     {} after {:.3}s: {}", format_us(*c), m.duration_us as f64 / 1e6, m.reason);
        }
        _ => println!("closed     (still open)"),
    }
    println!("bytes      {} from client, {} from upstream", summary.bytes_from_client, summary.bytes_from_upstream);
    println!("frames     {} from client, {} from upstream", frames[0], frames[1]);
    if let Some(m) = close.as_ref().filter(|m| !m.masked.is_empty()) {
        let counts: Vec<String> = m.masked.iter().map(|(k, n)| format!("{k}={n}")).collect();
        println!("masked     {}", counts.join(", "));
    }
    if let (Some(a), Some(b)) = (seqs.first(), seqs.last()) {
        println!("records    {} (seq {a}..={b})", seqs.len());
    }
    Ok(ExitCode::SUCCESS)
}
