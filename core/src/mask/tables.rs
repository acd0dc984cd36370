//! Text tables: psql's aligned output, rows of cells split by `|` or by tabs, Markdown tables.
//!
//! A value in a table says what it is only in its column's header, lines away: `| 52201 |` under
//! `zip`, `F326865635515` under `license`. The keyword detectors need their keyword beside the
//! value, so each cell of a row is also masked as the value of a field named by its header —
//! as a JSON value is by its key and a result column by its name (`license: F326865635515`).
//! What that finds is added to what the text itself gives; where the two overlap, the one that
//! starts first is masked, as between any two findings.
//!
//! A table is read line by line, each line judged on the lines before it only, so a stream
//! judges it as the whole text does:
//! - a line with at least two cells (split by `|`, or else by tabs) that is not a row of the
//!   table before it is a header;
//! - a line with the header's separator and as many cells is a row (a leading and a trailing
//!   `|`, as Markdown writes them, do not make cells);
//! - a rule (`---+---`, `|:--|--:|`) keeps the table going;
//! - any other line, or one longer than [`MAX_ROW`] bytes, ends it.

use super::detect::{Detector, Finding};

/// The longest line read as a header or a row. A stream holds a line that may be a row until
/// it ends, so this is also the most it holds for a table.
pub(crate) const MAX_ROW: usize = 1024;

/// The most columns a header may have.
const MAX_COLUMNS: usize = 64;

/// The table the next line may belong to.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    header: Option<Header>,
}

#[derive(Debug)]
struct Header {
    sep: u8,
    /// Each column's name, as a key (empty: the column says nothing).
    names: Vec<String>,
}

impl Tables {
    /// Whether the next line may be a row of a table (a stream holds such a line until it
    /// ends).
    pub(crate) fn expects_row(&self) -> bool {
        self.header.is_some()
    }

    /// Reads the whole line `text[start..end]` (without its `\n`): a row's cells, each masked
    /// as the value of its column's field, add their findings to `out` (in order). True if it
    /// is a row.
    pub(crate) fn line(
        &mut self,
        det: &Detector,
        text: &[u8],
        start: usize,
        end: usize,
        out: &mut Vec<Finding>,
    ) -> bool {
        let line = &text[start..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > MAX_ROW {
            self.header = None;
            return false;
        }
        if self.header.is_some() && is_rule(line) {
            return false;
        }
        let mut spans = [(0, 0); MAX_COLUMNS];
        let Some((sep, n)) = cells(line, &mut spans) else {
            self.header = None;
            return false;
        };
        let cells = &spans[..n];
        match &self.header {
            Some(h) if h.sep == sep && h.names.len() == n => {
                let mut hay = Vec::new();
                let mut found = Vec::new();
                for (name, &(a, b)) in h.names.iter().zip(cells) {
                    if name.is_empty() || a == b {
                        continue;
                    }
                    hay.clear();
                    let from = super::key_prefix(name, &mut hay);
                    hay.extend_from_slice(&line[a..b]);
                    found.clear();
                    det.scan(&hay, 0, hay.len(), &mut found);
                    let shift = |p: usize| start + a + (p - from);
                    out.extend(found.iter().filter(|f| f.start >= from).map(|f| Finding {
                        start: shift(f.start),
                        end: shift(f.end),
                        match_end: shift(f.match_end.max(f.end)),
                        ..*f
                    }));
                }
                true
            }
            _ => {
                let names = cells.iter().map(|&(a, b)| name(&line[a..b])).collect();
                self.header = Some(Header { sep, names });
                false
            }
        }
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
        let mut at = self.seen.max(self.line);
        while let Some(k) = memchr::memchr(b'\n', &buf[at..whole]) {
            let nl = at + k;
            if self.long {
                self.tables.header = None;
            } else if self.tables.line(det, buf, self.line, nl, &mut self.found) {
                self.rows.push((self.line, nl + 1));
            }
            (self.line, self.long, at) = (nl + 1, false, nl + 1);
        }
        self.seen = whole;
        // Longer than any row even without a `\r` at its end.
        self.long |= whole - self.line > MAX_ROW + 1;
    }

    /// The end of the text: the line that has not ended is read too.
    pub(crate) fn finish(&mut self, det: &Detector, buf: &[u8]) {
        self.read(det, buf, buf.len());
        if !self.long && self.line < buf.len() && self.tables.line(det, buf, self.line, buf.len(), &mut self.found) {
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
    pub(crate) fn take(&mut self, until: usize, findings: &mut Vec<Finding>) {
        let n = self.found.partition_point(|f| f.start < until);
        if n > 0 {
            merge(findings, self.found.drain(..n).collect());
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
            (f.start, f.end, f.match_end) =
                (f.start.saturating_sub(cut), f.end.saturating_sub(cut), f.match_end.saturating_sub(cut));
        }
        for (start, end) in &mut self.rows {
            (*start, *end) = (start.saturating_sub(cut), end.saturating_sub(cut));
        }
    }
}

/// Findings in the rows of the tables of `text[from..]`, in order, added to `out` after its own
/// (which are in order too): the whole text's answer to what a stream reads line by line.
pub(crate) fn add_rows(det: &Detector, text: &[u8], from: usize, out: &mut Vec<Finding>) {
    let rest = &text[from..];
    // A header and a row: two lines, and a separator.
    if memchr::memchr(b'\n', rest).is_none() || memchr::memchr2(b'|', b'\t', rest).is_none() {
        return;
    }
    let mut tables = Tables::default();
    let mut rows = Vec::new();
    let mut at = from;
    for nl in memchr::memchr_iter(b'\n', rest).map(|i| from + i).chain(std::iter::once(text.len())) {
        if nl > at || nl < text.len() {
            tables.line(det, text, at, nl, &mut rows);
        }
        at = nl + 1;
    }
    merge(out, rows);
}

/// Adds `rows` (in order) to `findings` (the text's own, in order), keeping the whole in order
/// of start. A row finding that overlaps one of the text's own is left out: the text's own
/// findings stay as the detector gives them, so a stream, which emits them piece by piece,
/// sees the same.
pub(crate) fn merge(findings: &mut Vec<Finding>, rows: Vec<Finding>) {
    let overlaps = |a: &Finding, b: &Finding| a.start < b.match_end && b.start < a.match_end;
    let (mut own, n) = (0, findings.len());
    let mut added = false;
    for row in rows {
        // The text's own findings do not overlap each other: the first that ends after this
        // one starts is the only one that can overlap it.
        while own < n && findings[own].match_end <= row.start {
            own += 1;
        }
        if findings[..n].get(own).is_some_and(|f| overlaps(f, &row)) {
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

/// The cells of `line` into `spans` (trimmed of spaces): the separator and how many; `None`
/// when there are fewer than two or more than [`MAX_COLUMNS`].
fn cells(line: &[u8], spans: &mut [(usize, usize); MAX_COLUMNS]) -> Option<(u8, usize)> {
    let sep = if line.contains(&b'|') {
        b'|'
    } else if line.contains(&b'\t') {
        b'\t'
    } else {
        return None;
    };
    let (mut lo, mut hi) = trim(line, 0, line.len());
    if sep == b'|' {
        // Markdown's outer pipes.
        if line.get(lo) == Some(&b'|') {
            lo += 1;
        }
        if hi > lo && line[hi - 1] == b'|' {
            hi -= 1;
        }
    }
    let mut n = 0;
    let mut a = lo;
    for i in (lo..=hi).filter(|&i| i == hi || line[i] == sep) {
        if n == MAX_COLUMNS {
            return None;
        }
        spans[n] = trim(line, a, i);
        n += 1;
        a = i + 1;
    }
    (n >= 2).then_some((sep, n))
}

/// `a..b` without the white space at its ends.
fn trim(line: &[u8], mut a: usize, mut b: usize) -> (usize, usize) {
    while a < b && line[a].is_ascii_whitespace() {
        a += 1;
    }
    while b > a && line[b - 1].is_ascii_whitespace() {
        b -= 1;
    }
    (a, b)
}

/// A header cell as a key: without Markdown's emphasis and code marks.
fn name(cell: &[u8]) -> String {
    let cell: Vec<u8> = cell.iter().copied().filter(|b| !matches!(b, b'*' | b'`')).collect();
    String::from_utf8_lossy(&cell).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use crate::mask::{Detector, Profile, ProfileSpec, Tally};

    fn profile() -> Arc<Profile> {
        let det = Arc::new(Detector::new(&[], &[]).unwrap());
        Arc::new(Profile::new(det, ProfileSpec::redact_all("all"), None).unwrap())
    }

    fn masked(p: &Arc<Profile>, text: &str) -> String {
        String::from_utf8(p.mask_text(text.as_bytes(), &Tally::default())).unwrap()
    }

    fn streamed(p: &Arc<Profile>, text: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut s = p.stream(Arc::new(Tally::default()));
        let (mut out, mut at) = (Vec::new(), 0);
        for &c in cuts {
            out.extend(s.push(&text[at..c]));
            at = c;
        }
        out.extend(s.push(&text[at..]));
        out.extend(s.finish());
        out
    }

    /// Values that say nothing alone and are found beside their field's name.
    const CELLS: &[(&str, &str, &str)] = &[
        ("mrn", "028939", "MRN"),
        ("Member ID", "W123456789", "HEALTH_PLAN"),
        ("license_no", "F326865635515", "LICENSE"),
        ("zip", "52201", "ZIP"),
    ];

    #[test]
    fn a_cell_is_masked_as_the_value_of_its_columns_field() {
        let p = profile();
        for &(name, value, label) in CELLS {
            assert_eq!(masked(&p, value), value, "{value} alone");
            let keyed = String::from_utf8(p.mask_keyed(name, value.as_bytes(), &Tally::default())).unwrap();
            assert_eq!(keyed, format!("[PHI:{label}]"), "{name}: {value}");
        }
        let names: Vec<&str> = CELLS.iter().map(|c| c.0).collect();
        let values: Vec<&str> = CELLS.iter().map(|c| c.1).collect();
        let tables = [
            // psql, aligned, with its rule and row count.
            format!(" id | {} \n----+------\n 7 | {} \n(1 row)\n", names.join(" | "), values.join(" | ")),
            // Markdown, with its outer pipes and an alignment rule.
            format!("| id | {} |\n|---:|:---|---|---|---|\n| 7 | {} |\n", names.join(" | "), values.join(" | ")),
            // Pipes and tabs, as a program prints them, the last row without its line end.
            format!("id|{}\n7|{}", names.join("|"), values.join("|")),
            format!("id\t{}\r\n7\t{}\r\n", names.join("\t"), values.join("\t")),
        ];
        for table in &tables {
            let out = masked(&p, table);
            for &(_, value, label) in CELLS {
                assert!(!out.contains(value), "{value} survived in {out:?}");
                assert!(out.contains(&format!("[PHI:{label}]")), "{label} missing in {out:?}");
            }
            // The header is text like any other, and the id column says nothing.
            assert!(out.contains("mrn") && out.contains("7"), "{out:?}");
        }
    }

    #[test]
    fn only_a_line_that_fits_the_header_is_a_row() {
        let p = profile();
        let kept = [
            // Another number of cells, another separator, a line in between with no cells.
            "mrn | id\n028939 | 7 | 3\n",
            "mrn | id\n028939\t7\n",
            "mrn | id\nsee below\n028939 | 7\n",
            // No header: one line alone.
            "028939 | 7\n",
        ];
        for text in kept {
            assert_eq!(masked(&p, text), text);
        }
        // A line longer than a row ends the table, and is no header.
        let long = format!("mrn | id\n{}|x\n028939 | 7\n", "a ".repeat(super::MAX_ROW));
        assert_eq!(masked(&p, &long), long);
        let long_header = format!("mrn | {}\n028939 | 7\n", "a".repeat(super::MAX_ROW));
        assert_eq!(masked(&p, &long_header), long_header);
        // Rows go on after a rule; the table ends at the first line that is not a row.
        let out = masked(&p, "mrn | id\n--+--\n028939 | 7\n028940 | 8\n(2 rows)\n028941 | 9\n");
        assert_eq!(out, "mrn | id\n--+--\n[PHI:MRN] | 7\n[PHI:MRN] | 8\n(2 rows)\n028941 | 9\n");
    }

    #[test]
    fn a_value_of_a_document_or_a_row_masks_its_tables_too() {
        let p = profile();
        let body = br#"{"choices":[{"message":{"content":"| mrn | zip |\n|---|---|\n| 028939 | 52201 |"}}]}"#;
        let out = crate::mask::json::mask_document(&p, body, &Tally::default()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "| mrn | zip |\n|---|---|\n| [PHI:MRN] | [PHI:ZIP] |");
        // A keyed value: its key is not a table's header.
        let out = p.mask_keyed("note", b"mrn\tzip\n028939\t52201", &Tally::default());
        assert_eq!(out, b"mrn\tzip\n[PHI:MRN]\t[PHI:ZIP]");
    }

    /// Tables of the cells above, with look-alikes, prose and entities the text finds itself
    /// around them.
    fn table_text() -> impl Strategy<Value = String> {
        let name = prop::sample::select(vec!["mrn", "zip", "Member ID", "license_no", "id", "note", "**Name**"]);
        let value = prop::sample::select(vec![
            "028939",
            "52201",
            "W123456789",
            "F326865635515",
            "Maria Garcia",
            "123-45-6789",
            "call 617-555-0123",
            "",
            "ok",
        ]);
        let line = prop_oneof![
            (prop::collection::vec(name, 1..4), prop::sample::select(vec![" | ", "|", "\t"]))
                .prop_map(|(cells, sep)| cells.join(sep)),
            (prop::collection::vec(value, 1..4), prop::sample::select(vec![" | ", "|", "\t"]))
                .prop_map(|(cells, sep)| cells.join(sep)),
            prop::sample::select(vec!["---+---", "|---|---|", "(2 rows)", "", "Seen by Dr. Emily Chen today."])
                .prop_map(str::to_owned),
        ];
        (prop::collection::vec(line, 1..8), prop::sample::select(vec!["\n", "\r\n"]), any::<bool>())
            .prop_map(|(lines, end, last)| lines.join(end) + if last { end } else { "" })
    }

    proptest! {
        /// A stream masks tables as the whole text does, wherever the text is cut; and what a
        /// row's cells give is masked.
        #[test]
        fn any_split_of_a_table_masks_like_the_whole(
            text in table_text(),
            mut cuts in prop::collection::vec(0usize..400, 0..10),
        ) {
            let p = profile();
            let t = text.as_bytes();
            cuts.iter_mut().for_each(|c| *c %= t.len() + 1);
            cuts.sort_unstable();
            let whole = p.mask_text(t, &Tally::default());
            let got = streamed(&p, t, &cuts);
            prop_assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&whole));
            let every: Vec<usize> = (1..t.len()).collect();
            prop_assert_eq!(streamed(&p, t, &every), whole.clone());
            // Each value found is gone from the output: it is there as many times fewer.
            let out = String::from_utf8_lossy(&whole).into_owned();
            let found = p.detector().find_all(t);
            for f in &found {
                let value = &text[f.start..f.end];
                let times = found.iter().filter(|g| &text[g.start..g.end] == value).count();
                prop_assert!(
                    out.matches(value).count() + times <= text.matches(value).count(),
                    "{:?} survived: {:?}", value, out
                );
            }
        }
    }
}
