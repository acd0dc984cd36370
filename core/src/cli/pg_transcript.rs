//! The text replay of a PostgreSQL session as a psql-like transcript: each statement, its
//! parameters, the result table as the caller received it, the command tag, errors and notices.
//! Frames that do not decode are shown as bytes, as the raw replay would.

use std::io::Write;

use airlock_decoders::Decoder as _;
use airlock_decoders::postgres::backend::{BackendDecoder, BackendMessage};
use airlock_decoders::postgres::frontend::{FrontendDecoder, FrontendMessage};
use bytes::BytesMut;

use crate::journal::read::{Content, SessionRecord};
use crate::journal::record::{Direction, RecordKind};
use crate::time::format_us;

/// Rows shown per result before the rest is summarised.
const MAX_ROWS: usize = 50;

/// Accumulates one result set until its CommandComplete.
#[derive(Default)]
pub(super) struct Transcript {
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
    more: usize,
    /// Each direction's bytes not yet a whole message: a message larger than one record
    /// continues in the next record of its direction.
    client: (FrontendDecoder, BytesMut),
    server: (BackendDecoder, BytesMut),
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Transcript {
    fn table(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        if self.columns.is_empty() && self.rows.is_empty() {
            return Ok(());
        }
        let n = self.columns.len().max(self.rows.iter().map(Vec::len).max().unwrap_or(0));
        let mut widths = vec![0usize; n];
        for (i, c) in self.columns.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
        for row in &self.rows {
            for (i, v) in row.iter().enumerate() {
                widths[i] = widths[i].max(v.chars().count());
            }
        }
        let line = |cells: &[String]| {
            cells.iter().enumerate().map(|(i, c)| format!(" {c:<w$} ", w = widths[i])).collect::<Vec<_>>().join("|")
        };
        writeln!(out, "    {}", line(&self.columns))?;
        writeln!(out, "    {}", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("+"))?;
        for row in &self.rows {
            writeln!(out, "    {}", line(row))?;
        }
        if self.more > 0 {
            writeln!(out, "    … {} more rows", self.more)?;
        }
        self.columns.clear();
        self.rows.clear();
        self.more = 0;
        Ok(())
    }

    /// Writes one journal record of a PostgreSQL session.
    pub(super) fn record(&mut self, out: &mut impl Write, r: &SessionRecord) -> std::io::Result<bool> {
        let RecordKind::Data(f) = &r.record.kind else { return Ok(false) };
        let Some(Content::Bytes(b)) = &r.content else { return Ok(false) };
        if b.is_empty() {
            return Ok(false);
        }
        let t = format_us(r.record.time_us);
        match f.direction {
            Direction::ClientToUpstream => {
                self.client.1.extend_from_slice(b);
                loop {
                    let (dec, buf) = &mut self.client;
                    let m = match dec.decode(buf) {
                        Ok(Some(m)) => m,
                        Ok(None) => break,
                        Err(e) => {
                            buf.clear();
                            writeln!(out, "{t} #{} => (undecodable: {e})", r.seq)?;
                            return Ok(false);
                        }
                    };
                    match m {
                        FrontendMessage::Query { sql } => writeln!(out, "{t} #{} => {}", r.seq, text(&sql))?,
                        FrontendMessage::Parse { name, sql, .. } => {
                            writeln!(out, "{t} #{} => PREPARE {:?}: {}", r.seq, text(&name), text(&sql))?
                        }
                        FrontendMessage::Bind { params, .. } if !params.is_empty() => {
                            let p: Vec<String> =
                                params.iter().map(|p| p.as_ref().map_or_else(|| "NULL".into(), |v| text(v))).collect();
                            writeln!(out, "    params: [{}]", p.join(", "))?
                        }
                        FrontendMessage::CopyData(d) => writeln!(out, "    (copy data, {} bytes)", d.len())?,
                        FrontendMessage::Terminate => writeln!(out, "{t} #{} => (terminate)", r.seq)?,
                        _ => {}
                    }
                }
            }
            Direction::UpstreamToClient => {
                self.server.1.extend_from_slice(b);
                loop {
                    let (dec, buf) = &mut self.server;
                    let m = match dec.decode(buf) {
                        Ok(Some(m)) => m,
                        Ok(None) => break,
                        Err(e) => {
                            buf.clear();
                            writeln!(out, "{t} #{} <= (undecodable: {e})", r.seq)?;
                            return Ok(false);
                        }
                    };
                    match &m {
                        BackendMessage::RowDescription(cols) => {
                            self.columns = cols.iter().map(|c| text(&c.name)).collect();
                        }
                        BackendMessage::DataRow(values) => {
                            if self.rows.len() < MAX_ROWS {
                                self.rows.push(
                                    values
                                        .iter()
                                        .map(|v| v.as_ref().map_or_else(|| "NULL".into(), |v| text(v)))
                                        .collect(),
                                );
                            } else {
                                self.more += 1;
                            }
                        }
                        BackendMessage::CommandComplete { tag } => {
                            self.table(out)?;
                            writeln!(out, "{t} #{} <= ({})", r.seq, text(tag))?;
                        }
                        BackendMessage::ErrorResponse(_) => {
                            self.table(out)?;
                            let field = |c| m.field(c).map(|v| text(v)).unwrap_or_default();
                            writeln!(out, "{t} #{} <= {} {}: {}", r.seq, field(b'S'), field(b'C'), field(b'M'))?;
                        }
                        BackendMessage::NoticeResponse(_) => writeln!(
                            out,
                            "{t} #{} <= NOTICE: {}",
                            r.seq,
                            m.field(b'M').map(|v| text(v)).unwrap_or_default()
                        )?,
                        BackendMessage::CopyData(d) => writeln!(out, "    (copy data, {} bytes)", d.len())?,
                        _ => {}
                    }
                }
            }
        }
        Ok(true)
    }
}
