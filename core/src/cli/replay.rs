//! `airlock replay ID [--format text|json|har] [--pace]`.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use super::{JournalArgs, ReplayFormat, parse_session_id};
use crate::journal::read::{Content, FrameJson, SessionRecord, session_records};
use crate::journal::record::RecordKind;
use crate::time::format_us;

/// Longest pause `--pace` keeps between two frames.
const MAX_PACE_GAP: Duration = Duration::from_secs(60);

pub(super) fn replay(args: &JournalArgs, id: &str, format: ReplayFormat, pace: bool) -> anyhow::Result<ExitCode> {
    let id = parse_session_id(id)?;
    let (store, master) = args.open()?;
    store.session(&id)?.with_context(|| format!("no session {id} in the journal"))?;
    let records = session_records(&store, &id, Some(&master))?;
    let mut out = std::io::stdout().lock();
    if format == ReplayFormat::Har {
        let doc = super::har::har(&records)?;
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let postgres =
        records.iter().any(|r| matches!(&r.record.kind, RecordKind::SessionOpen(m) if m.protocol == "postgres"));
    let mut transcript = super::pg_transcript::Transcript::default();
    let mut prev_us = None;
    for r in &records {
        if pace {
            if let Some(p) = prev_us {
                let gap = Duration::from_micros(u64::try_from(r.record.time_us.saturating_sub(p)).unwrap_or(0));
                out.flush()?;
                std::thread::sleep(gap.min(MAX_PACE_GAP));
            }
            prev_us = Some(r.record.time_us);
        }
        match format {
            ReplayFormat::Json => writeln!(out, "{}", serde_json::to_string(&FrameJson::new(r))?)?,
            // PostgreSQL sessions read as a psql-like transcript; everything else as bytes.
            ReplayFormat::Text if postgres && matches!(r.record.kind, RecordKind::Data(_)) => {
                if !transcript.record(&mut out, r)? {
                    write_text(&mut out, r)?;
                }
            }
            ReplayFormat::Text => write_text(&mut out, r)?,
            ReplayFormat::Har => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_text(out: &mut impl std::io::Write, r: &SessionRecord) -> std::io::Result<()> {
    let t = format_us(r.record.time_us);
    match &r.record.kind {
        RecordKind::SessionOpen(m) => {
            let tls = m.tls.as_ref().map(|t| format!(" tls={} {}", t.version, t.cipher_suite)).unwrap_or_default();
            let roles = m.identity.as_ref().map(|i| format!(" roles=[{}]", i.roles.join(","))).unwrap_or_default();
            writeln!(
                out,
                "{t} #{} == open route={} client={} principal={}{roles} upstream={}{tls}{}",
                r.seq,
                m.route,
                m.client_addr,
                m.principal,
                m.upstream,
                if m.break_glass { " BREAK-GLASS" } else { "" }
            )
        }
        RecordKind::Decision(m) => writeln!(
            out,
            "{t} #{} == {} {}: {} by rule {} ({}){}",
            r.seq,
            m.phase,
            m.request,
            m.effect,
            m.rule,
            m.reason,
            m.policy_version.as_deref().map(|v| format!(" policy {v}")).unwrap_or_default()
        ),
        RecordKind::UpstreamConnected(m) => {
            let tls = m.tls.as_ref().map(|t| format!(" tls={} {}", t.version, t.cipher_suite)).unwrap_or_default();
            writeln!(out, "{t} #{} == upstream connected {}{tls}", r.seq, m.addr)
        }
        RecordKind::SessionClose(m) => {
            let masked = if m.masked.is_empty() {
                String::new()
            } else {
                let counts: Vec<String> = m.masked.iter().map(|(k, n)| format!("{k}={n}")).collect();
                format!(" masked: {}", counts.join(", "))
            };
            writeln!(
                out,
                "{t} #{} == close: {} ({} bytes in, {} bytes out, {:.3}s){masked}",
                r.seq,
                m.reason,
                m.bytes_from_client,
                m.bytes_from_upstream,
                m.duration_us as f64 / 1e6
            )
        }
        RecordKind::Data(f) => match &r.content {
            Some(Content::Bytes(b)) if b.is_empty() && f.fin => {
                writeln!(out, "{t} #{} {} (half-close)", r.seq, f.direction.arrow())
            }
            Some(Content::Bytes(b)) if f.head => {
                let end = if f.fin { ", the message ends here" } else { "" };
                writeln!(out, "{t} #{} {} HTTP head{end}", r.seq, f.direction.arrow())?;
                for line in String::from_utf8_lossy(b).lines().filter(|l| !l.is_empty()) {
                    writeln!(out, "    {line}")?;
                }
                Ok(())
            }
            Some(Content::Bytes(b)) => {
                writeln!(
                    out,
                    "{t} #{} {} {} bytes{}",
                    r.seq,
                    f.direction.arrow(),
                    b.len(),
                    if f.fin { ", then half-close" } else { "" }
                )?;
                for line in escape_lines(b) {
                    writeln!(out, "    {line}")?;
                }
                Ok(())
            }
            Some(Content::Unavailable(why)) => {
                writeln!(out, "{t} #{} {} [payload unavailable: {why}]", r.seq, f.direction.arrow())
            }
            None => writeln!(out, "{t} #{} {} [no payload]", r.seq, f.direction.arrow()),
        },
    }
}

/// Printable ASCII as is, `\\`, `\r`, `\t`, `\n` escaped, everything else `\xNN`; a line ends
/// after each `\n` so text protocols read naturally.
pub(crate) fn escape_lines(bytes: &[u8]) -> Vec<String> {
    let mut lines = vec![String::new()];
    for &b in bytes {
        let cur = lines.last_mut();
        let Some(cur) = cur else { break };
        match b {
            b'\\' => cur.push_str("\\\\"),
            b'\r' => cur.push_str("\\r"),
            b'\t' => cur.push_str("\\t"),
            b'\n' => {
                cur.push_str("\\n");
                lines.push(String::new());
            }
            0x20..=0x7e => cur.push(char::from(b)),
            _ => cur.push_str(&format!("\\x{b:02x}")),
        }
    }
    if lines.len() > 1 && lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::escape_lines;

    #[test]
    fn escapes_non_printables_and_breaks_after_newlines() {
        assert_eq!(
            escape_lines(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            vec!["GET / HTTP/1.1\\r\\n", "Host: x\\r\\n", "\\r\\n"]
        );
        assert_eq!(escape_lines(b"\x00\x01Q\\\xff"), vec!["\\x00\\x01Q\\\\\\xff"]);
        assert_eq!(escape_lines(b""), vec![""]);
    }
}
