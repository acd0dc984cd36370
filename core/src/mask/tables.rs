//! Text tables: psql's output, rows of cells split by `|` or by tabs, Markdown tables.
//!
//! A value in a table says what it is only in its column's header, lines away: `| 52201 |` under
//! `zip`, `F326865635515` under `license`. The keyword detectors need their keyword beside the
//! value, so each cell of a row is also masked as the value of a field named by its header —
//! as a JSON value is by its key and a result column by its name (`license: F326865635515`).
//! What that finds is added to what the text itself gives (see [`merge`]).
//!
//! A table is read line by line, each line judged on the lines before it only, so a stream
//! judges it as the whole text does:
//! - a line with at least two cells (split by `|`, or else by tabs; one is enough between a
//!   leading and a trailing `|`, as Markdown writes them) starts a table when none is going;
//! - a line with the header's separator and as many cells is a row (outer `|` are not cells
//!   when the header had them, so psql's `-A` output keeps an empty first or last cell);
//! - another line with cells does not end the table (a row with a `|` in a cell, or cut
//!   short): it is kept as the header of the next table, which its first row starts;
//! - a rule (`---+---`, `|:--|--:|`), or a line longer than [`MAX_ROW`] bytes, leaves the table
//!   as it was;
//! - any other line (prose, psql's `(2 rows)`, an empty line) ends it.
//!
//! psql's expanded output (`\x`) has a record's fields one to a line, `name | value`, after a
//! `-[ RECORD 1 ]-` line: each value is masked as its name's, until a line with no `|`.

use super::detect::{Caches, Detector, Finding, KeyMemo};

/// The longest line read as a header or a row. A stream holds a line that may be a row until
/// it ends, so this is also the most it holds for a table.
pub(crate) const MAX_ROW: usize = 4096;

/// The most columns a header may have.
const MAX_COLUMNS: usize = 64;

/// The longest column name kept (its end, where the noun is: `Patient Medical Record Number`):
/// each cell is scanned behind it.
const MAX_NAME: usize = 64;

/// The table the next line may belong to.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    header: Option<Header>,
    /// A line with cells that was not a row of `header`: the header of the next table, if
    /// a row of it comes.
    next: Option<Header>,
    /// In a record of psql's expanded output (`\x`), whose lines are `name | value`.
    record: bool,
    /// The last [`Header::serial`] given.
    serials: u64,
}

#[derive(Debug)]
struct Header {
    sep: u8,
    /// Whether its line began and ended with a `|` that is not a cell's.
    outer: (bool, bool),
    /// Each column's name as the prefix its cells are scanned behind (`name: `, see
    /// [`prefix`]; empty: the column says nothing), end to end: column `i`'s ends at
    /// `ends[i]`. One buffer, not a string per column: most tables in a text have one row.
    prefixes: Vec<u8>,
    ends: Vec<usize>,
    /// Names the header to the column memos of [`Cells`] (never 0), which are used with the
    /// headers of one [`Tables`] only.
    serial: u64,
}

impl Header {
    /// The header of the cells `spans` of `line`, if it names a column; its serial is the one
    /// after `serials`.
    fn new(line: &[u8], sep: u8, outer: (bool, bool), spans: &[(usize, usize)], serials: &mut u64) -> Option<Self> {
        let mut prefixes = Vec::with_capacity(line.len() + 2 * spans.len());
        let ends = spans
            .iter()
            .map(|&(a, b)| {
                prefix(&line[a..b], &mut prefixes);
                prefixes.len()
            })
            .collect();
        // A header names at least one column.
        if prefixes.is_empty() {
            return None;
        }
        *serials += 1;
        Some(Header { sep, outer, prefixes, ends, serial: *serials })
    }

    /// The prefix of column `i`.
    fn prefix(&self, i: usize) -> &[u8] {
        let from = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.prefixes[from..self.ends[i]]
    }
}

impl Tables {
    /// Whether the next line may be a row of a table (a stream holds such a line until it
    /// ends).
    pub(crate) fn expects_row(&self) -> bool {
        self.header.is_some() || self.record
    }

    /// Reads the whole line `text[start..end]` (without its `\n`): a row's cells, each masked
    /// as the value of its column's field, add their findings to `out` (in order; each one's
    /// `match_start` is where its line starts). True if it is a row.
    #[inline(never)]
    pub(crate) fn line(
        &mut self,
        cells: &mut Cells<'_>,
        text: &[u8],
        start: usize,
        end: usize,
        out: &mut Vec<Finding>,
    ) -> bool {
        let line = &text[start..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > MAX_ROW {
            return false;
        }
        // psql's expanded output: `-[ RECORD 1 ]-+-----` starts a record.
        if line.starts_with(b"-[ RECORD ") {
            (self.header, self.next, self.record) = (None, None, true);
            return false;
        }
        if self.record {
            if let Some(bar) = memchr::memchr(b'|', line) {
                let (a, b) = trim(line, 0, bar, 0);
                let mut name = Vec::new();
                prefix(&line[a..b], &mut name);
                cells.scan(line, start, &name, trim(line, bar + 1, line.len(), 0), None, out);
                return true;
            }
            self.record = false;
        }
        if self.header.is_some() && is_rule(line) {
            return false;
        }
        // A line with no separator (most lines of prose) is no row and no header: one pass.
        let Some(first) = memchr::memchr2(b'|', b'\t', line) else {
            (self.header, self.next) = (None, None);
            return false;
        };
        let mut spans = [(0, 0); MAX_COLUMNS];
        // A row has its header's separator (a line with none is one cell, as a one-column
        // table's header is) and as many cells.
        let fits = |h: &Option<Header>, spans: &mut [(usize, usize); MAX_COLUMNS]| {
            h.as_ref()
                .is_some_and(|h| line.contains(&h.sep) && split(line, h.sep, h.outer, spans) == Some(h.ends.len()))
        };
        if !fits(&self.header, &mut spans) {
            if !fits(&self.next, &mut spans) {
                // Not a row: perhaps a header, split by `|` if it has one, else by tabs.
                let sep =
                    if line[first] == b'\t' && memchr::memchr(b'|', &line[first..]).is_none() { b'\t' } else { b'|' };
                let (lo, hi) = trim(line, 0, line.len(), sep);
                let outer =
                    (sep == b'|' && line.get(lo) == Some(&b'|'), sep == b'|' && hi > lo + 1 && line[hi - 1] == b'|');
                let least = if outer == (true, true) { 1 } else { 2 };
                let header = split(line, sep, outer, &mut spans)
                    .filter(|&n| n >= least)
                    .and_then(|n| Header::new(line, sep, outer, &spans[..n], &mut self.serials));
                match header {
                    Some(h) if self.header.is_some() => self.next = Some(h),
                    Some(h) => self.header = Some(h),
                    None => (self.header, self.next) = (None, None),
                }
                return false;
            }
            (self.header, self.next) = (self.next.take(), None);
        }
        let Some(h) = &self.header else { return false };
        for (column, &cell) in spans[..h.ends.len()].iter().enumerate() {
            cells.scan(line, start, h.prefix(column), cell, Some((h.serial, column)), out);
        }
        true
    }
}

/// What scans the cells of rows: the detector, with its caches and buffers kept from cell to
/// cell (a row has many short cells, as a document has many short values).
pub(crate) struct Cells<'d> {
    det: &'d Detector,
    hay: Vec<u8>,
    found: Vec<Finding>,
    caches: Caches<'d>,
    /// Where a cell is not scanned (a whole text's, see [`add_rows`]): from where each of the
    /// text's own findings that will be masked starts to where its match ends, in order.
    covered: Vec<(usize, usize)>,
    /// By column: the header it is of (its serial), and what the search found in the name's
    /// prefix (see [`KeyMemo`]), for the column's next cells.
    memos: Vec<(u64, KeyMemo)>,
}

impl<'d> Cells<'d> {
    pub(crate) fn new(det: &'d Detector) -> Self {
        Cells {
            det,
            hay: Vec::new(),
            found: Vec::new(),
            caches: Caches::default(),
            covered: Vec::new(),
            memos: Vec::new(),
        }
    }

    /// Scans the cell `line[a..b]` behind the `prefix` of its field's name (nothing when either
    /// is empty), adding what it finds to `out` where `line` starts at `start`. A cell of a
    /// `column` of a header (its serial and place) goes on from what the search found in its
    /// name the last time.
    fn scan(
        &mut self,
        line: &[u8],
        start: usize,
        prefix: &[u8],
        (a, b): (usize, usize),
        column: Option<(u64, usize)>,
        out: &mut Vec<Finding>,
    ) {
        if prefix.is_empty() || a == b {
            return;
        }
        // A cell inside one of the text's own findings that will be masked: [`merge`] would
        // leave out everything found in it.
        let (lo, hi) = (start + a, start + b);
        let i = self.covered.partition_point(|&(s, _)| s <= lo);
        if i > 0 && self.covered[i - 1].1 >= hi {
            return;
        }
        self.hay.clear();
        self.hay.extend_from_slice(prefix);
        let from = prefix.len();
        self.hay.extend_from_slice(&line[a..b]);
        self.found.clear();
        match column {
            Some((serial, i)) if i < MAX_COLUMNS => {
                if self.memos.len() <= i {
                    self.memos.resize_with(i + 1, Default::default);
                }
                // A memo holds one name's states: a new header starts a new one at this place,
                // from the column's second cell (most tables in a text have one row, and
                // learning costs a little more than the search it saves).
                let (of, memo) = &mut self.memos[i];
                if *of == serial {
                    self.det.scan_keyed(&self.hay, from, &mut self.found, &mut self.caches, memo);
                } else {
                    *of = serial;
                    *memo = KeyMemo::default();
                    self.det.scan_text(&self.hay, &mut self.found, &mut self.caches);
                }
            }
            _ => self.det.scan_text(&self.hay, &mut self.found, &mut self.caches),
        }
        let shift = |p: usize| start + a + (p - from);
        out.extend(self.found.iter().filter(|f| f.start >= from).map(|f| Finding {
            start: shift(f.start),
            end: shift(f.end),
            match_start: start,
            match_end: shift(f.match_end.max(f.end)),
            ..*f
        }));
    }
}

/// The tables of a stream, read a line at a time as lines end. Positions are in the stream's
/// buffer.
#[derive(Debug, Default)]
pub(crate) struct StreamRows {
    tables: Tables,
    /// Where the line that has not ended starts.
    line: usize,
    /// That line is already longer than [`MAX_ROW`]: it is no header and no row.
    long: bool,
    /// How far the buffer was searched for line ends.
    seen: usize,
    /// Findings in rows, in order, not yet emitted.
    found: Vec<Finding>,
    /// Rows not yet wholly emitted, from their start to after their `\n`.
    rows: Vec<(usize, usize)>,
}

impl StreamRows {
    /// Reads the lines of `buf[..whole]` that ended since the last call.
    pub(crate) fn read(&mut self, det: &Detector, buf: &[u8], whole: usize) {
        let at = self.seen.max(self.line);
        // Most pieces of a stream end no line: this runs on every one.
        if memchr::memchr(b'\n', &buf[at..whole]).is_some() {
            self.read_lines(det, buf, at, whole);
        }
        self.seen = whole;
        // Longer than any row even without a `\r` at its end.
        self.long |= whole - self.line > MAX_ROW + 1;
    }

    /// Reads each line that ends in `buf[at..whole]`.
    #[inline(never)]
    fn read_lines(&mut self, det: &Detector, buf: &[u8], mut at: usize, whole: usize) {
        let mut cells = Cells::new(det);
        while let Some(k) = memchr::memchr(b'\n', &buf[at..whole]) {
            let nl = at + k;
            // A line too long for a row leaves the table as it was.
            if !self.long && self.tables.line(&mut cells, buf, self.line, nl, &mut self.found) {
                self.rows.push((self.line, nl + 1));
            }
            (self.line, self.long, at) = (nl + 1, false, nl + 1);
        }
    }

    /// The end of the text: the line that has not ended is read too.
    #[inline(never)]
    pub(crate) fn finish(&mut self, det: &Detector, buf: &[u8]) {
        self.read(det, buf, buf.len());
        if !self.long
            && self.line < buf.len()
            && self.tables.line(&mut Cells::new(det), buf, self.line, buf.len(), &mut self.found)
        {
            self.rows.push((self.line, buf.len()));
        }
        (self.line, self.seen) = (buf.len(), buf.len());
    }

    /// How far text may be emitted, where the detector would emit up to `p`: a row goes in
    /// one piece, so a row and a line that may become one wait until they have ended.
    pub(crate) fn hold(&self, mut p: usize) -> usize {
        if let Some(&(start, _)) = self.rows.iter().find(|&&(start, end)| start < p && p < end) {
            p = start;
        }
        if self.tables.expects_row() && !self.long {
            p = p.min(self.line);
        }
        p
    }

    /// Adds the row findings that start before `until` to `findings` (those the detector found
    /// for the text emitted up to `until`).
    pub(crate) fn take(&mut self, until: usize, findings: &mut Vec<Finding>, applies: impl Fn(&Finding) -> bool) {
        let n = self.found.partition_point(|f| f.start < until);
        if n > 0 {
            merge(findings, self.found.drain(..n).collect(), applies);
        }
    }

    /// The text before `base` has been emitted.
    pub(crate) fn emitted(&mut self, base: usize) {
        self.rows.retain(|&(_, end)| end > base);
    }

    /// The first place in the buffer still needed: the start of the line that has not ended,
    /// which may be a header.
    pub(crate) fn needed(&self) -> usize {
        if self.long { usize::MAX } else { self.line }
    }

    /// The buffer lost its first `cut` bytes.
    pub(crate) fn shift(&mut self, cut: usize) {
        self.line = self.line.saturating_sub(cut);
        self.seen = self.seen.saturating_sub(cut);
        for f in &mut self.found {
            for p in [&mut f.start, &mut f.end, &mut f.match_start, &mut f.match_end] {
                *p = p.saturating_sub(cut);
            }
        }
        for (start, end) in &mut self.rows {
            (*start, *end) = (start.saturating_sub(cut), end.saturating_sub(cut));
        }
    }
}

/// Findings in the rows of the tables of `text[from..]`, merged into `out` (the text's own, in
/// order; see [`merge`]): the whole text's answer to what a stream reads line by line.
pub(crate) fn add_rows(
    det: &Detector,
    text: &[u8],
    from: usize,
    out: &mut Vec<Finding>,
    applies: impl Fn(&Finding) -> bool,
) {
    let rest = &text[from..];
    // A header and a row: two lines, and a separator.
    if memchr::memchr(b'\n', rest).is_none() || memchr::memchr2(b'|', b'\t', rest).is_none() {
        return;
    }
    let mut tables = Tables::default();
    let mut cells = Cells::new(det);
    // The text's own findings are all here (a stream's are not yet, and it scans every cell):
    // a cell inside one that will be masked is not scanned, as `merge` would leave out all it
    // gives. They are in order and do not overlap, so each ends after the one before.
    cells.covered = out.iter().filter(|f| applies(f)).map(|f| (f.start, f.match_end)).collect();
    let mut rows = Vec::new();
    let mut at = from;
    for nl in memchr::memchr_iter(b'\n', rest).map(|i| from + i).chain(std::iter::once(text.len())) {
        if nl > at || nl < text.len() {
            tables.line(&mut cells, text, at, nl, &mut rows);
        }
        at = nl + 1;
    }
    merge(out, rows, applies);
}

/// Adds `rows` (in order; each one's `match_start` is where its line starts) to `findings` (the
/// text's own, in order), keeping the whole in order of start. The text's own findings are
/// kept as the detector gave them, so a stream, which emits them piece by piece, sees the same.
/// A row finding is left out where one of them
/// - began before the row's line and runs into it (a stream has emitted past it), or
/// - overlaps it and will be masked (`applies`: one the profile keeps, or is not sure enough
///   of, does not stand in the way of a cell masked by its column).
pub(crate) fn merge(findings: &mut Vec<Finding>, rows: Vec<Finding>, applies: impl Fn(&Finding) -> bool) {
    let blocks = |own: &Finding, row: &Finding| {
        row.start < own.match_end && (own.match_start < row.match_start || (own.start < row.match_end && applies(own)))
    };
    let (mut first, n) = (0, findings.len());
    let mut added = false;
    for row in rows {
        // The text's own findings end in order: those before `first` end before this one.
        while first < n && findings[first].match_end <= row.start {
            first += 1;
        }
        let mut own = findings[first..n].iter().take_while(|f| f.match_start < row.match_end);
        if own.any(|f| blocks(f, &row)) {
            continue;
        }
        findings.push(row);
        added = true;
    }
    if added {
        // Stable: of two at one place, the text's own (added first) stays first.
        findings.sort_by_key(|f| f.start);
    }
}

/// A rule between a header and its rows: dashes, with `+`, `|`, `:` and spaces.
fn is_rule(line: &[u8]) -> bool {
    line.contains(&b'-') && line.iter().all(|b| matches!(b, b'-' | b'+' | b'|' | b':' | b'=' | b' ' | b'\t'))
}

/// How many cells `line` has, split by `sep` (past a leading and before a trailing `|` when
/// `outer` says so), with their spans (trimmed of white space) in `spans`; `None` when there
/// are more than [`MAX_COLUMNS`].
fn split(line: &[u8], sep: u8, outer: (bool, bool), spans: &mut [(usize, usize); MAX_COLUMNS]) -> Option<usize> {
    let (mut lo, mut hi) = trim(line, 0, line.len(), sep);
    if outer.0 && line.get(lo) == Some(&sep) {
        lo += 1;
    }
    if outer.1 && hi > lo && line[hi - 1] == sep {
        hi -= 1;
    }
    let mut n = 0;
    let mut a = lo;
    for i in memchr::memchr_iter(sep, &line[lo..hi]).map(|i| lo + i).chain(std::iter::once(hi)) {
        if n == MAX_COLUMNS {
            return None;
        }
        spans[n] = trim(line, a, i, 0);
        n += 1;
        a = i + 1;
    }
    Some(n)
}

/// `a..b` without the white space at its ends, except `keep` (a tab that separates cells).
fn trim(line: &[u8], mut a: usize, mut b: usize, keep: u8) -> (usize, usize) {
    let space = |c: u8| c.is_ascii_whitespace() && c != keep;
    while a < b && space(line[a]) {
        a += 1;
    }
    while b > a && space(line[b - 1]) {
        b -= 1;
    }
    (a, b)
}

/// Appends the prefix a cell is scanned behind (`name: `, see `key_prefix`) for the header
/// cell `cell`: its name without Markdown's emphasis and code marks, at most its last
/// [`MAX_NAME`] bytes. Nothing when the name is empty.
fn prefix(cell: &[u8], out: &mut Vec<u8>) {
    // Most names have no marks and are UTF-8: read in place.
    let unmarked: Vec<u8>;
    let cell = if memchr::memchr2(b'*', b'`', cell).is_some() {
        unmarked = cell.iter().copied().filter(|b| !matches!(b, b'*' | b'`')).collect();
        &unmarked[..]
    } else {
        cell
    };
    let name = String::from_utf8_lossy(cell);
    let name = name.trim();
    let mut cut = name.len().saturating_sub(MAX_NAME);
    while !name.is_char_boundary(cut) {
        cut += 1;
    }
    if cut < name.len() {
        super::key_prefix(&name[cut..], out);
    }
}

#[cfg(test)]
mod tests;
