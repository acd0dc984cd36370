//! Masking of what a PostgreSQL session returns: DataRow values by column rule or detector,
//! and COPY OUT rows.
//!
//! - Column rules name a column, optionally of one table. At session start the gateway asks the
//!   upstream's catalog which `(table oid, column number)` pairs they mean, so a rule follows the
//!   column through aliases (`SELECT ssn AS x FROM patients`): RowDescription carries the source
//!   table and column of every plain column reference. A rule without a table also matches a
//!   result column by name.
//! - A date or timestamp, in either format, is NULL unless the profile keeps dates (judged by
//!   its type, so that a session's `DateStyle` cannot hide it from the detectors).
//! - A `bytea` value is read as the bytes it holds (its text form is hex): NULL on a finding.
//! - Binary values the gateway cannot read as text: an integer is checked as its decimal text
//!   (NULL on a finding), and any other type that could hold text (arrays, records, citext,
//!   enums) is NULL — fail closed.
//! - Every other value of a text type (text, varchar, char, name, json, jsonb, xml, and, in text
//!   format, any type the gateway does not know to be structured) goes through the detectors;
//!   JSON values through the JSON masker, XML values read with their character references
//!   decoded (`219&#45;09&#45;9999` is an SSN to whoever reads the document). A structured
//!   value (a number) in which a detector finds something becomes NULL rather than an
//!   unparseable string; binary values of structured types are masked by column rules only.
//! - A DataRow with no RowDescription before it in its result cannot be masked: the session ends
//!   (fail closed). libpq and the drivers built on it always describe what they execute.
//! - COPY OUT rows go through the detectors. Column rules cannot follow COPY's columns, so with a
//!   profile that has column rules a COPY OUT is refused with 42501 and its data dropped.

use std::collections::HashMap;
use std::sync::Arc;

use airlock_decoders::postgres::backend::{self, BackendMessage, FieldDescription};
use airlock_decoders::postgres::frontend::{FrontendMessage, Target};
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use super::driver::{Fail, read_backend_raw};
use crate::mask::{Action, FieldRule, FieldSelector, Profile, Tally, ValueBuffers, Values};
use crate::proto::session::Io;

/// Type OIDs whose values are text in both formats.
const TEXT_TYPES: &[i32] = &[25, 1043, 1042, 19, 18, 705, 142];
/// `json` and `jsonb`.
const JSON: i32 = 114;
const JSONB: i32 = 3802;
/// `xml`.
const XML: i32 = 142;
/// `bytea`.
const BYTEA: i32 = 17;
/// Built-in types whose text form is structured: masking one to a string would break the
/// caller's parser, so a finding there makes the value NULL.
const STRUCTURED: &[i32] = &[
    16, 17, 20, 21, 23, 26, 700, 701, 1700, 790, 1082, 1083, 1114, 1184, 1186, 1266, 2950, 869, 650, 829, 774, 1560,
    1562, 3614, 3615, 28, 29, 27,
];

/// How one result column is masked.
#[derive(Debug, Clone, Copy)]
enum Column {
    /// Passed as it is.
    Pass,
    /// The detectors over a text value (or JSON, or the version byte then JSON for jsonb binary).
    Text { json: bool, jsonb_binary: bool },
    /// An `xml` value: the detectors over it as its reader sees it (character references
    /// decoded), written as it came where nothing is masked.
    Xml,
    /// The detectors over a structured value in text form: a finding makes it NULL.
    Structured,
    /// A column rule.
    Rule { rule: usize, text: bool, json: bool, jsonb_binary: bool },
    /// A binary number (`int2`, `int4`, `int8`, `oid`, `float4`, `float8`, `numeric`; the type
    /// OID): read as its decimal text by the detectors (a card number kept as `numeric`); a
    /// finding makes it NULL.
    BinaryNumber(i32),
    /// A date or timestamp (binary, or text in whatever `DateStyle` the session chose): NULL
    /// unless the profile keeps dates.
    Date,
    /// A `bytea` value, in hex (text format) or raw: the bytes it holds are scanned, and a
    /// finding makes it NULL.
    Bytea { hex: bool },
    /// A binary value the gateway cannot read (arrays, records, citext, enums …): NULL.
    Unreadable,
}

/// Binary types that cannot carry an identifier the detectors would find: `bool`, `uuid`,
/// `interval`.
const BINARY_SAFE: &[i32] = &[16, 2950, 1186];
/// Binary numbers read as text: `int8`, `int2`, `int4`, `oid`, `float4`, `float8`, `numeric`.
const BINARY_NUMBERS: &[i32] = &[20, 21, 23, 26, 700, 701, 1700];
/// `date`, `timestamp`, `timestamptz`, `time`, `timetz`.
const DATE_TYPES: &[i32] = &[1082, 1114, 1184, 1083, 1266];
/// The types among them that hold a date: `date`, `timestamp`, `timestamptz`.
const TEXT_DATES: &[i32] = &[1082, 1114, 1184];

/// What a message sent upstream will be answered with, in the order sent: how the masker knows
/// which description a result row follows.
#[derive(Debug)]
enum Expect {
    /// ParseComplete: the named statement is new, its columns not yet described.
    Parse(Bytes),
    /// BindComplete: the portal now holds the statement, with these result formats.
    Bind { portal: Bytes, statement: Bytes, formats: Vec<i16> },
    /// ParameterDescription, then RowDescription or NoData, for the named statement.
    DescribeStatement(Bytes),
    /// RowDescription or NoData, for the named portal.
    DescribePortal(Bytes),
    /// Rows of the named portal, then CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute(Bytes),
    /// CloseComplete: the statement or portal is gone.
    Close(Target, Bytes),
    /// ReadyForQuery.
    Sync,
    /// A simple query (or a fast-path call): its results, each with its own RowDescription, then
    /// ReadyForQuery.
    Query,
}

/// Most statements and portals whose descriptions are kept (a client that prepares without end
/// gets the oldest forgotten: its rows then end the session rather than go unread).
const MAX_DESCRIBED: usize = 1024;

/// The masker of one session.
#[derive(Debug)]
pub(super) struct PgMasker {
    profile: Arc<Profile>,
    tally: Arc<Tally>,
    /// `(table oid, column number)` → column rule.
    resolved: HashMap<(i32, i16), usize>,
    /// The current result's columns, with their names (context for the detectors).
    plan: Option<Vec<(Column, String)>>,
    copy_out: bool,
    /// A refused COPY OUT: its data is dropped until its CommandComplete.
    swallow: bool,
    /// Answers still to come, oldest first.
    expect: std::collections::VecDeque<Expect>,
    /// What masks the values of one row, kept from row to row.
    buffers: ValueBuffers,
    /// Result columns of prepared statements, as Describe reported them (text format).
    statements: HashMap<Bytes, Vec<FieldDescription>>,
    /// Result columns of portals in the formats their Bind asked for; `None` when the statement
    /// was never described (then a Describe of the portal must say).
    portals: HashMap<Bytes, Option<Vec<FieldDescription>>>,
    /// The statement each portal was bound from: a Describe of the portal describes it too.
    bound: HashMap<Bytes, Bytes>,
}

fn column_rules(profile: &Profile) -> Vec<(usize, Option<&str>, &str)> {
    profile
        .fields
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match &r.selector {
            FieldSelector::Column { table, column } => Some((i, table.as_deref(), column.as_str())),
            _ => None,
        })
        .collect()
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl PgMasker {
    /// The masker for a session masked with `profile`. With column rules, first asks the
    /// upstream's catalog where those columns live; the messages the upstream had sent after
    /// login are kept in `ubuf`, in order, for the caller.
    pub(super) async fn start(
        profile: Arc<Profile>,
        tally: Arc<Tally>,
        upstream: &mut Box<dyn Io>,
        ubuf: &mut BytesMut,
    ) -> Result<Self, Fail> {
        let rules = column_rules(&profile);
        let mut resolved = HashMap::new();
        if !rules.is_empty() {
            // The login's own messages, up to its ReadyForQuery, wait while the catalog answers.
            let mut held = BytesMut::new();
            loop {
                let (m, raw) = read_backend_raw(upstream, ubuf).await?;
                held.extend_from_slice(&raw);
                match m {
                    BackendMessage::ReadyForQuery { .. } => break,
                    BackendMessage::ErrorResponse(_) => return Err("the upstream failed the session start".into()),
                    _ => {}
                }
            }
            let names: Vec<String> = rules.iter().map(|(_, _, c)| quote(&c.to_lowercase())).collect();
            let sql = format!(
                "SELECT c.oid::int4, a.attnum::int2, n.nspname::text, c.relname::text, a.attname::text \
                 FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE a.attnum > 0 AND NOT a.attisdropped AND lower(a.attname) IN ({})",
                names.join(", ")
            );
            let mut q = Vec::from(&b"Q\0\0\0\0"[..]);
            q.extend_from_slice(sql.as_bytes());
            q.push(0);
            let len = u32::try_from(q.len() - 1).map_err(|_| "catalog query too long".to_owned())?;
            q[1..5].copy_from_slice(&len.to_be_bytes());
            upstream.write_all(&q).await.map_err(|e| format!("upstream write error: {e}"))?;
            loop {
                let (m, _) = read_backend_raw(upstream, ubuf).await?;
                match m {
                    BackendMessage::DataRow(values) => {
                        let text = |i: usize| {
                            values.get(i).cloned().flatten().map(|b| String::from_utf8_lossy(&b).into_owned())
                        };
                        let (Some(oid), Some(attnum), Some(schema), Some(table), Some(column)) =
                            (text(0), text(1), text(2), text(3), text(4))
                        else {
                            continue;
                        };
                        let (Ok(oid), Ok(attnum)) = (oid.parse::<i32>(), attnum.parse::<i16>()) else { continue };
                        for (i, want_table, want_col) in &rules {
                            let table_ok = want_table.is_none_or(|t| {
                                t.eq_ignore_ascii_case(&table) || t.eq_ignore_ascii_case(&format!("{schema}.{table}"))
                            });
                            if table_ok && want_col.eq_ignore_ascii_case(&column) {
                                resolved.entry((oid, attnum)).or_insert(*i);
                            }
                        }
                    }
                    BackendMessage::ErrorResponse(_) => {
                        return Err("the upstream refused the catalog lookup for column rules".into());
                    }
                    BackendMessage::ReadyForQuery { .. } => break,
                    _ => {}
                }
            }
            let rest = ubuf.split();
            ubuf.extend_from_slice(&held);
            ubuf.extend_from_slice(&rest);
        }
        Ok(Self::with(profile, tally, resolved))
    }

    /// A masker with its column rules resolved to `resolved`, in a fresh session's state.
    fn with(profile: Arc<Profile>, tally: Arc<Tally>, resolved: HashMap<(i32, i16), usize>) -> Self {
        Self {
            profile,
            tally,
            resolved,
            plan: None,
            copy_out: false,
            swallow: false,
            expect: Default::default(),
            buffers: ValueBuffers::default(),
            statements: HashMap::new(),
            portals: HashMap::new(),
            bound: HashMap::new(),
        }
    }

    /// Notes a message on its way to the upstream (as it is sent, stand-ins included), so that
    /// rows can be read through the description of the portal that produced them: a client such
    /// as asyncpg describes a statement once and then binds and executes it with no Describe.
    /// Nothing changes until the server answers: a message the server skips (after an error)
    /// changes nothing, and the answers come in the order the messages were sent.
    pub(super) fn frontend(&mut self, m: &FrontendMessage) {
        let expect = match m {
            FrontendMessage::Parse { name, .. } => Expect::Parse(name.clone()),
            FrontendMessage::Bind { portal, statement, result_formats, .. } => {
                Expect::Bind { portal: portal.clone(), statement: statement.clone(), formats: result_formats.clone() }
            }
            FrontendMessage::Describe { target: Target::Statement, name } => Expect::DescribeStatement(name.clone()),
            FrontendMessage::Describe { target: Target::Portal, name } => Expect::DescribePortal(name.clone()),
            FrontendMessage::Execute { portal, .. } => Expect::Execute(portal.clone()),
            FrontendMessage::Close { target, name } => Expect::Close(*target, name.clone()),
            FrontendMessage::Sync => Expect::Sync,
            FrontendMessage::Query { .. } | FrontendMessage::FunctionCall(_) => Expect::Query,
            _ => return,
        };
        self.expect.push_back(expect);
    }

    /// A statement's columns, as described (text format).
    fn describe_statement(&mut self, name: Bytes, fields: Vec<FieldDescription>) {
        if self.statements.len() >= MAX_DESCRIBED {
            self.statements.clear();
        }
        self.statements.insert(name, fields);
    }

    /// Forgets every statement and portal: SQL-level PREPARE, DEALLOCATE, DECLARE, CLOSE or
    /// DISCARD changed them where the protocol does not show it.
    fn forget_all(&mut self) {
        self.statements.clear();
        self.portals.clear();
        self.bound.clear();
    }

    /// The columns of the result now arriving, for its first row: the simple query's own
    /// description, or the executing portal's.
    fn result_plan(&mut self) -> Option<&Vec<(Column, String)>> {
        if self.plan.is_none()
            && let Some(Expect::Execute(portal)) = self.expect.front()
            && let Some(Some(fields)) = self.portals.get(portal)
        {
            let plan = fields.iter().map(|f| (self.plan(f), String::from_utf8_lossy(&f.name).into_owned())).collect();
            self.plan = Some(plan);
        }
        self.plan.as_ref()
    }

    /// Drops the expectations an answer has settled: up to and including the first that
    /// `done` accepts. Answers that skip ahead (after an error) drop what they skipped.
    fn settle(&mut self, done: impl Fn(&Expect) -> bool) {
        if let Some(at) = self.expect.iter().position(done) {
            self.expect.drain(..=at);
        }
    }

    /// The tables (if they name one) and columns of the profile's column rules, lower-case (a
    /// statement that returns one through an expression is refused: see the driver).
    pub(super) fn ruled_columns(&self) -> Vec<(Option<String>, String)> {
        column_rules(&self.profile)
            .into_iter()
            .map(|(_, table, column)| (table.map(str::to_lowercase), column.to_lowercase()))
            .collect()
    }

    /// The statement `name` is gone or replaced. A portal bound from it lives on (PostgreSQL
    /// keeps it), but its description no longer describes the statement of that name.
    fn forget_statement(&mut self, name: &Bytes) {
        self.statements.remove(name);
        self.bound.retain(|_, statement| statement != name);
    }

    fn plan(&self, f: &FieldDescription) -> Column {
        let binary = f.format == 1;
        let name = String::from_utf8_lossy(&f.name);
        let rule = self.resolved.get(&(f.table_oid, f.column)).copied().or_else(|| {
            self.profile.fields.iter().position(|r| {
                matches!(&r.selector, FieldSelector::Column { table: None, column } if column.eq_ignore_ascii_case(&name))
            })
        });
        let text = TEXT_TYPES.contains(&f.type_oid);
        let json = f.type_oid == JSON || f.type_oid == JSONB;
        let jsonb_binary = f.type_oid == JSONB && binary;
        if let Some(rule) = rule {
            return Column::Rule {
                rule,
                text: text || json || (!binary && !STRUCTURED.contains(&f.type_oid)),
                json,
                jsonb_binary,
            };
        }
        if f.type_oid == XML {
            Column::Xml
        } else if f.type_oid == BYTEA {
            Column::Bytea { hex: !binary }
        } else if text || json {
            Column::Text { json, jsonb_binary }
        } else if binary {
            match f.type_oid {
                t if BINARY_NUMBERS.contains(&t) => Column::BinaryNumber(t),
                t if DATE_TYPES.contains(&t) => Column::Date,
                t if BINARY_SAFE.contains(&t) => Column::Pass,
                _ => Column::Unreadable,
            }
        } else if TEXT_DATES.contains(&f.type_oid) {
            // Read by type, not by the detectors: `SET DateStyle = German` writes `04.03.1971`.
            Column::Date
        } else if STRUCTURED.contains(&f.type_oid) {
            Column::Structured
        } else {
            // A type the gateway does not know (citext, an enum, an array, a composite) in text
            // form: text as far as masking goes.
            Column::Text { json: false, jsonb_binary: false }
        }
    }

    /// One value of a row; `values` masks the row's values with the detectors.
    fn value(&self, col: Column, name: &str, v: Option<Bytes>, values: &mut Values<'_>) -> Option<Bytes> {
        let v = v?;
        match col {
            Column::Pass => Some(v),
            Column::BinaryNumber(oid) => {
                let Some(text) = binary_number_text(oid, &v) else {
                    self.tally.add("UNREADABLE", 1);
                    return None;
                };
                if values.mask(Some(name), text.as_bytes()) { None } else { Some(v) }
            }
            Column::Date => {
                if self.profile.keeps("DATE") {
                    Some(v)
                } else {
                    self.tally.add("DATE", 1);
                    None
                }
            }
            Column::Unreadable => {
                self.tally.add("UNREADABLE", 1);
                None
            }
            Column::Bytea { hex } => {
                let held = if hex { unhex(&v) } else { Some(v.to_vec()) };
                let Some(held) = held else {
                    self.tally.add("UNREADABLE", 1);
                    return None;
                };
                if values.mask(Some(name), &held) { None } else { Some(v) }
            }
            Column::Text { json, jsonb_binary } => Some(self.text(name, &v, json, jsonb_binary, values)),
            Column::Xml => {
                let masked = self.profile.mask_markup_keyed(name, &v, false, &self.tally);
                Some(if masked == v[..] { v } else { masked.into() })
            }
            Column::Structured => {
                if values.mask(Some(name), &v) {
                    None
                } else {
                    Some(v)
                }
            }
            Column::Rule { rule, text, json, jsonb_binary } => {
                let r: &FieldRule = &self.profile.fields[rule];
                match r.action {
                    Action::Keep => Some(v),
                    Action::Null | Action::Drop => {
                        self.tally.add(&r.label, 1);
                        None
                    }
                    _ if !text => {
                        self.tally.add(&r.label, 1);
                        None
                    }
                    _ => {
                        let body = if jsonb_binary { v.get(1..).unwrap_or_default() } else { &v[..] };
                        let masked = self.profile.field_text(r, body, &self.tally);
                        let masked = if json {
                            serde_json::to_vec(&String::from_utf8_lossy(&masked)).unwrap_or_else(|_| b"null".to_vec())
                        } else {
                            masked
                        };
                        Some(with_version(jsonb_binary, masked))
                    }
                }
            }
        }
    }

    fn text(&self, name: &str, v: &Bytes, json: bool, jsonb_binary: bool, values: &mut Values<'_>) -> Bytes {
        let body = if jsonb_binary { v.get(1..).unwrap_or_default() } else { &v[..] };
        let masked = if json {
            crate::mask::json::mask_document(&self.profile, body, &self.tally).unwrap_or_else(|_| b"null".to_vec())
        } else if values.mask(Some(name), body) {
            values.out.clone()
        } else {
            return v.clone();
        };
        if masked == body { v.clone() } else { with_version(jsonb_binary, masked) }
    }

    /// One text field of an error or notice, masked. A detail that quotes a key
    /// (`Key (mrn)=(A028939) already exists.`) is read with its columns as context, and under a
    /// column rule for one of them its values are replaced whole. A detail that quotes a whole
    /// row (`Failing row contains (…)`) is withheld under column rules, which cannot follow it.
    fn diagnostic(&self, code: u8, value: &[u8]) -> Vec<u8> {
        if code == b'D' {
            if let Some(rest) = value.strip_prefix(b"Key (")
                && let Some(eq) = rest.windows(3).position(|w| w == b")=(")
            {
                let columns = String::from_utf8_lossy(&rest[..eq]);
                let values = &rest[eq + 3..];
                // The values end at the last `)`: what follows is the server's own words.
                let (values, tail) = values.split_at(values.iter().rposition(|&b| b == b')').unwrap_or(values.len()));
                let mut out = value[..5 + eq + 3].to_vec();
                let ruled = columns.split(',').map(|c| c.trim().trim_matches('"')).find_map(|c| {
                    self.profile.fields.iter().find(|r| {
                        matches!(&r.selector, FieldSelector::Column { column, .. } if column.eq_ignore_ascii_case(c))
                    })
                });
                match ruled {
                    Some(rule) => out.extend(self.profile.field_text(rule, values, &self.tally)),
                    None => out.extend(self.profile.mask_keyed(&columns, values, &self.tally)),
                }
                out.extend_from_slice(tail);
                return out;
            }
            if value.starts_with(b"Failing row contains (") && !column_rules(&self.profile).is_empty() {
                self.tally.add("ROW", 1);
                return b"Failing row contains (withheld: column rules apply on this route).".to_vec();
            }
        }
        self.profile.mask_text(value, &self.tally)
    }

    /// What the caller gets in place of one upstream message: the same bytes, a masked copy, or
    /// nothing. An error ends the session.
    pub(super) fn backend(&mut self, m: &BackendMessage, raw: Bytes) -> Result<Option<Bytes>, Fail> {
        if self.swallow {
            return Ok(match m {
                BackendMessage::CommandComplete { .. } | BackendMessage::ErrorResponse(_) => {
                    self.swallow = false;
                    if matches!(self.expect.front(), Some(Expect::Execute(_))) {
                        self.expect.pop_front();
                    }
                    None
                }
                BackendMessage::ReadyForQuery { .. } => {
                    self.swallow = false;
                    self.settle(|e| matches!(e, Expect::Sync | Expect::Query));
                    Some(raw)
                }
                _ => None,
            });
        }
        match m {
            BackendMessage::RowDescription(fields) => {
                match self.expect.front() {
                    Some(Expect::DescribeStatement(name)) => {
                        let name = name.clone();
                        self.describe_statement(name, fields.clone());
                        self.expect.pop_front();
                        self.plan = None;
                    }
                    Some(Expect::DescribePortal(name)) => {
                        let name = name.clone();
                        // The statement it was bound from has these columns (in text format).
                        if let Some(statement) = self.bound.get(&name).cloned() {
                            let mut text = fields.clone();
                            text.iter_mut().for_each(|f| f.format = 0);
                            self.describe_statement(statement, text);
                        }
                        self.portals.insert(name, Some(fields.clone()));
                        self.expect.pop_front();
                        self.plan = None;
                    }
                    // A simple query's result (or one the gateway cannot place: read by it).
                    _ => {
                        self.plan = Some(
                            fields
                                .iter()
                                .map(|f| (self.plan(f), String::from_utf8_lossy(&f.name).into_owned()))
                                .collect(),
                        );
                    }
                }
                Ok(Some(raw))
            }
            BackendMessage::ParseComplete => {
                if let Some(Expect::Parse(name)) = self.expect.front() {
                    let name = name.clone();
                    self.forget_statement(&name);
                    self.expect.pop_front();
                }
                Ok(Some(raw))
            }
            BackendMessage::CloseComplete => {
                if let Some(Expect::Close(target, name)) = self.expect.front() {
                    let (target, name) = (*target, name.clone());
                    match target {
                        Target::Statement => self.forget_statement(&name),
                        Target::Portal => {
                            self.portals.remove(&name);
                            self.bound.remove(&name);
                        }
                    }
                    self.expect.pop_front();
                }
                Ok(Some(raw))
            }
            BackendMessage::DataRow(values) => {
                if self.result_plan().is_none() {
                    return Err("a result row arrived without a row description; it cannot be masked".into());
                }
                let Some(plan) = &self.plan else { return Err("a result row without a plan".into()) };
                let mut changed = false;
                let mut out = Vec::with_capacity(values.len());
                // The row's values are masked with one set of detector caches and buffers, and
                // counted once for the row.
                let mut masker = Values::with_buffers(&self.profile, std::mem::take(&mut self.buffers));
                for (i, v) in values.iter().enumerate() {
                    let (col, name) = plan
                        .get(i)
                        .map_or((Column::Text { json: false, jsonb_binary: false }, ""), |(c, n)| (*c, n.as_str()));
                    let new = self.value(col, name, v.clone(), &mut masker);
                    changed |= new != *v;
                    out.push(new);
                }
                self.buffers = masker.finish(&self.tally);
                Ok(Some(if changed { backend::encode(&BackendMessage::DataRow(out)) } else { raw }))
            }
            // Errors and notices quote values (`Key (ssn)=(219-09-9999) already exists.`), and a
            // notification carries a payload: their text is masked too.
            BackendMessage::ErrorResponse(fields) | BackendMessage::NoticeResponse(fields) => {
                let is_error = matches!(m, BackendMessage::ErrorResponse(_));
                if is_error {
                    self.plan = None;
                    self.copy_out = false;
                    // After an error in the extended protocol the server skips everything up to
                    // the next Sync (simple queries included); a simple query's error just ends it.
                    if !matches!(self.expect.front(), Some(Expect::Query)) {
                        while self.expect.front().is_some_and(|e| !matches!(e, Expect::Sync)) {
                            self.expect.pop_front();
                        }
                    }
                }
                let mut changed = false;
                let masked: Vec<(u8, Bytes)> = fields
                    .iter()
                    .map(|(code, value)| {
                        // Every field that server code can fill with text (`RAISE … USING
                        // COLUMN = …` sets `c`), not the severity, code, positions or source.
                        if !matches!(code, b'S' | b'V' | b'C' | b'P' | b'p' | b'F' | b'L' | b'R') {
                            let out = self.diagnostic(*code, value);
                            if out != value[..] {
                                changed = true;
                                return (*code, Bytes::from(out));
                            }
                        }
                        (*code, value.clone())
                    })
                    .collect();
                if !changed {
                    return Ok(Some(raw));
                }
                let msg = if is_error {
                    BackendMessage::ErrorResponse(masked)
                } else {
                    BackendMessage::NoticeResponse(masked)
                };
                Ok(Some(backend::encode(&msg)))
            }
            BackendMessage::NotificationResponse { process_id, channel, payload } => {
                let out = self.profile.mask_text(payload, &self.tally);
                Ok(Some(if out == payload[..] {
                    raw
                } else {
                    backend::encode(&BackendMessage::NotificationResponse {
                        process_id: *process_id,
                        channel: channel.clone(),
                        payload: Bytes::from(out),
                    })
                }))
            }
            // A new portal, or a Describe that found no rows: whatever description came before
            // is not this result's. Rows that follow without a description of their own end the
            // session rather than be read through the wrong columns.
            BackendMessage::BindComplete => {
                if let Some(Expect::Bind { portal, statement, formats }) = self.expect.pop_front() {
                    let fields = self.statements.get(&statement).map(|fields| {
                        let mut fields = fields.clone();
                        for (i, f) in fields.iter_mut().enumerate() {
                            f.format = match formats.as_slice() {
                                [] => 0,
                                [one] => *one,
                                many => many.get(i).copied().unwrap_or(0),
                            };
                        }
                        fields
                    });
                    if self.portals.len() >= MAX_DESCRIBED {
                        self.portals.clear();
                        self.bound.clear();
                    }
                    self.portals.insert(portal.clone(), fields);
                    self.bound.insert(portal, statement);
                } else {
                    // An answer the gateway cannot place: nothing it knew about portals holds.
                    self.forget_all();
                }
                self.plan = None;
                Ok(Some(raw))
            }
            BackendMessage::NoData => {
                match self.expect.front() {
                    Some(Expect::DescribeStatement(name)) => {
                        self.statements.insert(name.clone(), Vec::new());
                        self.expect.pop_front();
                    }
                    Some(Expect::DescribePortal(name)) => {
                        self.portals.insert(name.clone(), Some(Vec::new()));
                        self.expect.pop_front();
                    }
                    _ => {}
                }
                self.plan = None;
                Ok(Some(raw))
            }
            // `set_config('application_name', ssn, false)` reports the value back.
            BackendMessage::ParameterStatus { name, value } => {
                let out = self.profile.mask_text(value, &self.tally);
                Ok(Some(if out == value[..] {
                    raw
                } else {
                    backend::encode(&BackendMessage::ParameterStatus { name: name.clone(), value: Bytes::from(out) })
                }))
            }
            // A fast-path function's result: text when it reads as text, else withheld (NULL).
            BackendMessage::FunctionCallResponse(Some(value)) => {
                let out = if std::str::from_utf8(value).is_ok() {
                    let out = self.profile.mask_text(value, &self.tally);
                    if out == value[..] {
                        return Ok(Some(raw));
                    }
                    Some(Bytes::from(out))
                } else {
                    self.tally.add("UNREADABLE", 1);
                    None
                };
                Ok(Some(backend::encode(&BackendMessage::FunctionCallResponse(out))))
            }
            BackendMessage::CommandComplete { tag }
                if [&b"PREPARE"[..], b"DEALLOCATE", b"DECLARE", b"CLOSE", b"DISCARD"]
                    .iter()
                    .any(|t| tag.starts_with(t)) =>
            {
                self.forget_all();
                if matches!(self.expect.front(), Some(Expect::Execute(_))) {
                    self.expect.pop_front();
                }
                self.plan = None;
                self.copy_out = false;
                Ok(Some(raw))
            }
            BackendMessage::CommandComplete { .. }
            | BackendMessage::EmptyQueryResponse
            | BackendMessage::PortalSuspended => {
                if matches!(self.expect.front(), Some(Expect::Execute(_))) {
                    self.expect.pop_front();
                }
                self.plan = None;
                self.copy_out = false;
                Ok(Some(raw))
            }
            BackendMessage::ReadyForQuery { status } => {
                self.settle(|e| matches!(e, Expect::Sync | Expect::Query));
                // Outside a transaction block every portal is gone.
                if *status == b'I' {
                    self.portals.clear();
                    self.bound.clear();
                }
                self.plan = None;
                self.copy_out = false;
                Ok(Some(raw))
            }
            BackendMessage::CopyOutResponse { format, .. } | BackendMessage::CopyBothResponse { format, .. } => {
                // Binary COPY cannot be read as text, CopyBoth is replication: refused like COPY
                // under column rules.
                let readable = *format == 0 && matches!(m, BackendMessage::CopyOutResponse { .. });
                if readable && column_rules(&self.profile).is_empty() {
                    self.copy_out = true;
                    Ok(Some(raw))
                } else {
                    self.swallow = true;
                    Ok(Some(super::driver::error_fields(
                        "ERROR",
                        "42501",
                        "COPY TO is not available on this masked route (binary COPY, replication, or column \
                         rules, which cannot follow COPY data); use SELECT",
                    )))
                }
            }
            BackendMessage::CopyData(data) if self.copy_out => {
                // A row in text format writes a line break in a value as `\n`: read as the
                // break it is, or `Note\n219-09-9999` would hide the number behind a letter.
                let masked = match copy_row_read(data) {
                    Some(read) => self.profile.mask_text_read_as(&read, data, &self.tally),
                    None => self.profile.mask_text(data, &self.tally),
                };
                Ok(Some(if masked == data[..] {
                    raw
                } else {
                    backend::encode(&BackendMessage::CopyData(Bytes::from(masked)))
                }))
            }
            _ => Ok(Some(raw)),
        }
    }
}

/// A COPY row in text format as its reader reads it, byte for byte as long: each backslash
/// escape becomes a space and, unless it stands for a control character (`\n`, `\t`), the
/// character it escapes. `None` when the row has no escape. (In CSV a backslash is itself;
/// reading it so costs nothing but a word boundary.)
fn copy_row_read(row: &[u8]) -> Option<Vec<u8>> {
    memchr::memchr(b'\\', row)?;
    let mut read = Vec::with_capacity(row.len());
    let mut i = 0;
    while i < row.len() {
        if row[i] == b'\\' && i + 1 < row.len() {
            let c = row[i + 1];
            read.push(b' ');
            read.push(if c.is_ascii_alphabetic() { b' ' } else { c });
            i += 2;
        } else {
            read.push(row[i]);
            i += 1;
        }
    }
    Some(read)
}

/// The bytes of a `bytea` in its text form (`\x` then hex, as PostgreSQL writes it since 9.0);
/// `None` for anything else (the old escape format).
fn unhex(v: &[u8]) -> Option<Vec<u8>> {
    let hex = v.strip_prefix(b"\\x")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    hex.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok()).collect()
}

/// The decimal text of a binary number of type `oid` (see [`BINARY_NUMBERS`]); `None` if the
/// value is not one.
fn binary_number_text(oid: i32, v: &[u8]) -> Option<String> {
    let be2 = |i: usize| Some(u16::from_be_bytes([*v.get(i)?, *v.get(i + 1)?]));
    Some(match (oid, v.len()) {
        (21, 2) => i16::from_be_bytes([v[0], v[1]]).to_string(),
        (23, 4) => i32::from_be_bytes([v[0], v[1], v[2], v[3]]).to_string(),
        (26, 4) => u32::from_be_bytes([v[0], v[1], v[2], v[3]]).to_string(),
        (20, 8) => i64::from_be_bytes(v.try_into().ok()?).to_string(),
        (700, 4) => f32::from_be_bytes(v.try_into().ok()?).to_string(),
        (701, 8) => f64::from_be_bytes(v.try_into().ok()?).to_string(),
        (1700, _) => {
            // ndigits, weight (of the first digit, in powers of 10000), sign, dscale, then the
            // base-10000 digits.
            let (ndigits, weight, sign, dscale) = (be2(0)?, be2(2)? as i16, be2(4)?, be2(6)?);
            if v.len() != 8 + 2 * usize::from(ndigits) || ndigits > 1000 || dscale > 1000 {
                return None;
            }
            let digit = |i: i32| -> Option<u16> {
                if i < 0 || i >= i32::from(ndigits) { Some(0) } else { be2(8 + 2 * i as usize).filter(|d| *d < 10000) }
            };
            let mut out = String::new();
            match sign {
                0x0000 => {}
                0x4000 => out.push('-'),
                0xC000 => return Some("NaN".into()),
                0xD000 => return Some("Infinity".into()),
                0xF000 => return Some("-Infinity".into()),
                _ => return None,
            }
            // Integer part: groups for weights `weight` down to 0.
            if weight < 0 {
                out.push('0');
            } else {
                for w in 0..=i32::from(weight) {
                    let d = digit(w)?;
                    if w == 0 { out.push_str(&d.to_string()) } else { out.push_str(&format!("{d:04}")) }
                }
            }
            if dscale > 0 {
                out.push('.');
                let mut frac = String::new();
                let mut w = i32::from(weight) + 1;
                while frac.len() < usize::from(dscale) {
                    frac.push_str(&format!("{:04}", digit(w)?));
                    w += 1;
                }
                frac.truncate(usize::from(dscale));
                out.push_str(&frac);
            }
            out
        }
        _ => return None,
    })
}

fn with_version(jsonb_binary: bool, body: Vec<u8>) -> Bytes {
    if jsonb_binary {
        let mut out = Vec::with_capacity(body.len() + 1);
        out.push(1);
        out.extend_from_slice(&body);
        Bytes::from(out)
    } else {
        Bytes::from(body)
    }
}

#[cfg(test)]
mod tests;
