use super::*;
use crate::identity::AuthMethod;

fn who(roles: &[&str]) -> Principal {
    Principal {
        roles: roles.iter().map(|r| r.to_string()).collect(),
        method: AuthMethod::ApiKey { sha256: [0; 32] },
        subject: "svc".into(),
        ..Principal::anonymous()
    }
}

fn rule(id: &str, effect: Effect, roles: &[&str], operation: OperationMatch) -> Rule {
    Rule {
        id: id.into(),
        effect,
        reason: format!("reason of {id}"),
        routes: BTreeSet::new(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        operation,
    }
}

fn sql(kind: SqlKind, tables: &[&str]) -> Request {
    Request::Sql { kind, tables: Some(tables.iter().map(|t| t.to_string()).collect()), columns: Some(vec![]) }
}

fn policy(rules: Vec<Rule>) -> Policy {
    let mut routes = BTreeMap::new();
    routes.insert(
        "pg".to_string(),
        RouteAccess { allow_roles: ["clinician", "agent", "emergency"].map(String::from).into(), default_effect: None },
    );
    routes.insert("open".to_string(), RouteAccess::default());
    Policy { version: "v1".into(), routes, rules, break_glass_role: Some("emergency".into()) }
}

#[test]
fn allow_roles_gate_the_route() {
    let p = policy(vec![]);
    let d = p.evaluate("pg", &who(&["visitor"]), &Request::Bytes);
    assert_eq!((d.effect, d.rule.as_str()), (Effect::Deny, "route:pg:allow_roles"));
    assert!(d.reason.contains("`clinician`") && d.reason.contains("`visitor`"), "{}", d.reason);
    let d = p.evaluate("pg", &Principal::anonymous(), &Request::Bytes);
    assert_eq!(d.effect, Effect::Deny);
    let d = p.evaluate("pg", &who(&["clinician"]), &Request::Bytes);
    assert_eq!((d.effect, d.rule.as_str(), d.policy_version.as_str()), (Effect::Allow, "route:pg:default", "v1"));
    assert_eq!(p.evaluate("open", &Principal::anonymous(), &Request::Bytes).effect, Effect::Allow);
}

#[test]
fn deny_overrides_approval_which_overrides_allow() {
    let any_sql =
        || OperationMatch::Sql { kinds: BTreeSet::new(), tables: vec![], bare_tables: vec![], columns: vec![] };
    let p = policy(vec![
        rule("allow-all", Effect::Allow, &[], OperationMatch::Any),
        rule("hold-agents", Effect::RequireApproval, &["agent"], any_sql()),
        rule(
            "no-ddl",
            Effect::Deny,
            &[],
            OperationMatch::Sql { kinds: [SqlKind::Ddl].into(), tables: vec![], bare_tables: vec![], columns: vec![] },
        ),
    ]);
    let d = p.evaluate("pg", &who(&["agent"]), &sql(SqlKind::Ddl, &["patients"]));
    assert_eq!((d.effect, d.rule.as_str()), (Effect::Deny, "no-ddl"));
    let d = p.evaluate("pg", &who(&["agent"]), &sql(SqlKind::Select, &["patients"]));
    assert_eq!((d.effect, d.rule.as_str()), (Effect::RequireApproval, "hold-agents"));
    let d = p.evaluate("pg", &who(&["clinician"]), &sql(SqlKind::Select, &["patients"]));
    assert_eq!((d.effect, d.rule.as_str()), (Effect::Allow, "allow-all"));
}

#[test]
fn break_glass_skips_holds_but_not_denials() {
    let p = policy(vec![
        rule("hold", Effect::RequireApproval, &[], OperationMatch::Any),
        rule(
            "never-drop",
            Effect::Deny,
            &[],
            OperationMatch::Sql { kinds: [SqlKind::Ddl].into(), tables: vec![], bare_tables: vec![], columns: vec![] },
        ),
    ]);
    let d = p.evaluate("pg", &who(&["emergency"]), &sql(SqlKind::Select, &["t"]));
    assert_eq!((d.effect, d.rule.as_str()), (Effect::Allow, "hold"));
    assert!(d.reason.starts_with("break-glass"));
    assert_eq!(p.evaluate("pg", &who(&["emergency"]), &sql(SqlKind::Ddl, &["t"])).effect, Effect::Deny);
    assert_eq!(p.evaluate("pg", &who(&["clinician"]), &sql(SqlKind::Select, &["t"])).effect, Effect::RequireApproval);
}

#[test]
fn operations_match_by_protocol_and_glob() {
    let http = OperationMatch::Http {
        methods: ["DELETE".to_string()].into(),
        path: Some(glob("/v1/patients/**", true).unwrap()),
    };
    let grpc = OperationMatch::Grpc { service: Some(glob("inference.*", false).unwrap()), method: None };
    let mcp = OperationMatch::Mcp { tools: vec![glob("delete_*", false).unwrap()] };
    let cols = OperationMatch::Sql {
        kinds: BTreeSet::new(),
        tables: vec![],
        bare_tables: vec![],
        columns: vec![glob("ssn", false).unwrap()],
    };
    let p = policy(vec![
        rule("http", Effect::Deny, &[], http),
        rule("grpc", Effect::Deny, &[], grpc),
        rule("mcp", Effect::Deny, &[], mcp),
        rule("cols", Effect::Deny, &[], cols),
    ]);
    let c = who(&["clinician"]);
    let deny = |r: Request| p.evaluate("pg", &c, &r).rule;
    assert_eq!(deny(Request::Http { method: "DELETE".into(), path: "/v1/patients/7/notes".into() }), "http");
    assert_eq!(deny(Request::Http { method: "GET".into(), path: "/v1/patients/7".into() }), "route:pg:default");
    assert_eq!(deny(Request::Http { method: "DELETE".into(), path: "/v2/patients/7".into() }), "route:pg:default");
    assert_eq!(
        deny(Request::Grpc { service: "inference.GRPCInferenceService".into(), method: "ModelInfer".into() }),
        "grpc"
    );
    assert_eq!(deny(Request::Grpc { service: "health.Health".into(), method: "Check".into() }), "route:pg:default");
    assert_eq!(deny(Request::McpCall { tool: "delete_record".into() }), "mcp");
    assert_eq!(deny(Request::McpCall { tool: "read_record".into() }), "route:pg:default");
    assert_eq!(
        deny(Request::Sql {
            kind: SqlKind::Select,
            tables: Some(vec!["patients".into()]),
            columns: Some(vec!["ssn".into()])
        }),
        "cols"
    );
    assert_eq!(
        deny(Request::Sql {
            kind: SqlKind::Select,
            tables: Some(vec!["patients".into()]),
            columns: Some(vec!["name".into()])
        }),
        "route:pg:default"
    );
    // Columns that cannot be known (`SELECT *`): a deny rule on columns still applies.
    assert_eq!(
        deny(Request::Sql { kind: SqlKind::Select, tables: Some(vec!["patients".into()]), columns: None }),
        "cols"
    );
    // A protocol-specific rule never matches another protocol's request.
    assert_eq!(deny(Request::Bytes), "route:pg:default");
}

#[test]
fn rules_scope_to_routes_and_default_effect_applies() {
    let mut scoped = rule("pg-only", Effect::Deny, &[], OperationMatch::Any);
    scoped.routes = ["pg".to_string()].into();
    let mut p = policy(vec![scoped]);
    assert_eq!(p.evaluate("open", &who(&[]), &Request::Bytes).effect, Effect::Allow);
    assert_eq!(p.evaluate("pg", &who(&["agent"]), &Request::Bytes).rule, "pg-only");
    p.routes.get_mut("open").unwrap().default_effect = Some(Effect::Deny);
    let d = p.evaluate("open", &who(&[]), &Request::Bytes);
    assert_eq!((d.effect, d.rule.as_str()), (Effect::Deny, "route:open:default"));
}

#[test]
fn unknown_columns_never_satisfy_an_allow_rule() {
    let cols = || OperationMatch::Sql {
        kinds: BTreeSet::new(),
        tables: vec![],
        bare_tables: vec![],
        columns: vec![glob("name", false).unwrap()],
    };
    let mut p = policy(vec![rule("names-ok", Effect::Allow, &[], cols())]);
    p.routes.get_mut("pg").unwrap().default_effect = Some(Effect::Deny);
    let c = who(&["clinician"]);
    let known = Request::Sql { kind: SqlKind::Select, tables: Some(vec![]), columns: Some(vec!["name".into()]) };
    assert_eq!(p.evaluate("pg", &c, &known).rule, "names-ok");
    let unknown = Request::Sql { kind: SqlKind::Select, tables: Some(vec![]), columns: None };
    assert_eq!(p.evaluate("pg", &c, &unknown).effect, Effect::Deny);
}

#[test]
fn a_route_missing_from_the_policy_admits_no_one() {
    let p = policy(vec![rule("allow-all", Effect::Allow, &[], OperationMatch::Any)]);
    let d = p.evaluate("gone", &who(&["clinician"]), &Request::Bytes);
    assert_eq!((d.effect, d.rule.as_str()), (Effect::Deny, "route:gone:unknown"));
}

#[test]
fn evaluation_is_deterministic() {
    let p = policy(vec![rule("a", Effect::Allow, &["agent"], OperationMatch::Any)]);
    let req = sql(SqlKind::Select, &["x"]);
    let first = p.evaluate("pg", &who(&["agent"]), &req);
    for _ in 0..100 {
        assert_eq!(p.evaluate("pg", &who(&["agent"]), &req), first);
    }
}

#[test]
fn unknown_or_unqualified_tables_meet_the_rules_that_refuse() {
    let on = |effect, tables: &[&str]| {
        let bare = tables.iter().filter_map(|t| t.rsplit_once('.')).map(|(_, t)| glob(t, false).unwrap()).collect();
        let op = OperationMatch::Sql {
            kinds: BTreeSet::new(),
            tables: tables.iter().map(|t| glob(t, false).unwrap()).collect(),
            bare_tables: bare,
            columns: vec![],
        };
        rule("r", effect, &[], op)
    };
    let c = who(&["clinician"]);
    let unknown = Request::Sql { kind: SqlKind::Select, tables: None, columns: Some(vec![]) };
    // A deny or hold on tables meets a statement whose tables cannot be known; an allow does not.
    assert_eq!(policy(vec![on(Effect::Deny, &["secrets"])]).evaluate("pg", &c, &unknown).rule, "r");
    assert_eq!(policy(vec![on(Effect::RequireApproval, &["secrets"])]).evaluate("pg", &c, &unknown).rule, "r");
    let mut allow = policy(vec![on(Effect::Allow, &["secrets"])]);
    allow.routes.get_mut("pg").unwrap().default_effect = Some(Effect::Deny);
    assert_eq!(allow.evaluate("pg", &c, &unknown).rule, "route:pg:default");
    // A rule on `public.patients` refuses `patients` named without its schema, which the
    // search_path may resolve to it; an allow on it does not reach the bare name.
    let bare = sql(SqlKind::Select, &["patients"]);
    assert_eq!(policy(vec![on(Effect::Deny, &["public.patients"])]).evaluate("pg", &c, &bare).rule, "r");
    let mut allow = policy(vec![on(Effect::Allow, &["public.patients"])]);
    allow.routes.get_mut("pg").unwrap().default_effect = Some(Effect::Deny);
    assert_eq!(allow.evaluate("pg", &c, &bare).rule, "route:pg:default");
    assert_eq!(allow.evaluate("pg", &c, &sql(SqlKind::Select, &["public.patients", "patients"])).rule, "r");
    // Another schema's table of that name is refused too: the classifier also names a qualified
    // table by its last part, and that part cannot tell which schema it came from.
    let other = sql(SqlKind::Select, &["hr.patients", "patients"]);
    assert_eq!(policy(vec![on(Effect::Deny, &["public.patients"])]).evaluate("pg", &c, &other).rule, "r");
}
