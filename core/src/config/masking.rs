//! `[masking]` and a route's `mask` / `mask_roles`: which profile masks which caller's responses.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use super::{Config, ConfigError, SecretSource, invalid};
use crate::identity::Principal;
use crate::mask::{Action, CustomEntity, DenyList, Detector, FieldRule, FieldSelector, Profile, ProfileSpec};

/// `[masking]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskingConfig {
    /// Key for `pseudonymize` (HMAC-SHA-256): `{ env = "…" }` or `{ file = "…" }`. Default: none
    /// (a profile that pseudonymizes is then refused at startup).
    #[serde(default)]
    pub pseudonym_key: Option<SecretSource>,
    /// Custom regex entities, written `[[masking.custom]]`. Default: none.
    #[serde(default)]
    pub custom: Vec<CustomConfig>,
    /// Deny-list entities, written `[[masking.deny_list]]`. Default: none.
    #[serde(default)]
    pub deny_list: Vec<DenyListConfig>,
    /// Profiles, written `[[masking.profile]]`. Default: none.
    #[serde(default)]
    pub profile: Vec<ProfileConfig>,
    /// An encoded `FileDescriptorSet` (`protoc --include_imports --descriptor_set_out=FILE`) with
    /// the services of the gRPC routes: their responses are decoded and masked field by field.
    /// Default: none — a gRPC response on a masked route is then refused, never passed unmasked.
    #[serde(default)]
    pub descriptor_set: Option<std::path::PathBuf>,
    /// Singular string fields (`pkg.Message.field`) that carry text in pieces across the
    /// messages of a gRPC stream (token streaming); a value split between messages is still
    /// found. Default: none (each message is masked on its own).
    #[serde(default)]
    pub grpc_delta_fields: Vec<String>,
}

/// `[[masking.custom]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomConfig {
    /// Entity name. Required.
    pub name: String,
    /// Regex (byte-oriented; a group named `v` marks the value inside a larger match). Required.
    pub pattern: String,
    /// Confidence of a finding. Default: `0.9`.
    #[serde(default = "default_confidence")]
    pub confidence: f32,
}

/// `[[masking.deny_list]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyListConfig {
    /// Entity name. Required.
    pub name: String,
    /// Terms, matched as whole words. Required.
    pub terms: Vec<String>,
    /// Match case exactly. Default: `false`.
    #[serde(default)]
    pub case_sensitive: bool,
}

/// `[[masking.profile]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// Profile name (routes refer to it). Required; `none` is reserved for "no masking".
    pub name: String,
    /// Action for every detected entity not listed in `actions`: `redact`, `partial[:N]`,
    /// `pseudonymize` or `keep`. Default: `"redact"`.
    #[serde(default = "default_action")]
    pub default_action: String,
    /// Per-entity actions, e.g. `{ EMAIL = "pseudonymize", SSN = "partial:4", DATE = "keep" }`.
    /// Default: none.
    #[serde(default)]
    pub actions: HashMap<String, String>,
    /// Findings below this confidence are left alone. Default: `0.5`.
    #[serde(default = "default_min_confidence")]
    pub min_confidence: f32,
    /// Dates keep their year. Default: `false`.
    #[serde(default)]
    pub keep_year: bool,
    /// Field rules, written `[[masking.profile.field]]`. Default: none.
    #[serde(default)]
    pub field: Vec<FieldConfig>,
}

/// `[[masking.profile.field]]`: exactly one of `key`, `path`, `column`, `proto`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldConfig {
    /// A JSON key anywhere in a document (any case).
    #[serde(default)]
    pub key: Option<String>,
    /// A JSON path: `$.patient.dob`, `$.entries[*].ssn`.
    #[serde(default)]
    pub path: Option<String>,
    /// A PostgreSQL result column, by name; with `table`, only that table's column (aliases
    /// included). Default: none.
    #[serde(default)]
    pub column: Option<String>,
    /// With `column`: the table (`patients` or `schema.patients`). Default: any table.
    #[serde(default)]
    pub table: Option<String>,
    /// A protobuf field, `pkg.Message.field` or a bare field name.
    #[serde(default)]
    pub proto: Option<String>,
    /// `redact`, `partial[:N]`, `pseudonymize`, `drop` (JSON), `null` (PostgreSQL, JSON) or
    /// `keep`. Default: `"redact"`.
    #[serde(default = "default_action")]
    pub action: String,
    /// Label in replacements and counts. Default: the key, column or field name.
    #[serde(default)]
    pub label: Option<String>,
}

/// `mask_roles` entry on a route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleMaskConfig {
    /// A role.
    pub role: String,
    /// The profile for callers with it (`none`: unmasked).
    pub profile: String,
}

fn default_confidence() -> f32 {
    0.9
}
fn default_min_confidence() -> f32 {
    0.5
}
fn default_action() -> String {
    "redact".into()
}

/// The profiles a route uses, resolved.
#[derive(Debug)]
pub struct RouteMask {
    /// For callers whose roles match no `mask_roles` entry (`None`: unmasked).
    pub default: Option<Arc<Profile>>,
    /// Role → profile, first match wins.
    pub by_role: Vec<(String, Option<Arc<Profile>>)>,
    /// The gRPC schema, when `[masking] descriptor_set` is set.
    pub grpc: Option<Arc<crate::mask::grpc::Schema>>,
}

impl RouteMask {
    /// The profile for `principal`: the first `mask_roles` entry whose role it has, else the
    /// route's default. `None` means unmasked.
    pub fn for_principal(&self, principal: &Principal) -> Option<Arc<Profile>> {
        for (role, p) in &self.by_role {
            if principal.has_role(role) {
                return p.clone();
            }
        }
        self.default.clone()
    }
}

/// The built masking section: the detector and the profiles by name.
#[derive(Debug, Default)]
pub struct Masking {
    profiles: HashMap<String, Arc<Profile>>,
    grpc: Option<Arc<crate::mask::grpc::Schema>>,
}

fn action(field: &str, s: &str) -> Result<Action, ConfigError> {
    Action::parse(s).ok_or_else(|| {
        invalid(field, format!("`{s}` is not an action (redact, partial[:N], pseudonymize, drop, null, keep)"))
    })
}

impl Config {
    /// Compiles the detectors and the profiles.
    pub(super) fn build_masking(&self) -> Result<Masking, ConfigError> {
        let m = &self.masking;
        if m.profile.is_empty() {
            return Ok(Masking::default());
        }
        let custom: Vec<CustomEntity> = m
            .custom
            .iter()
            .map(|c| CustomEntity { name: c.name.clone(), pattern: c.pattern.clone(), confidence: c.confidence })
            .collect();
        let deny: Vec<DenyList> = m
            .deny_list
            .iter()
            .map(|d| DenyList { name: d.name.clone(), terms: d.terms.clone(), case_sensitive: d.case_sensitive })
            .collect();
        if let Some(d) = deny.iter().find(|d| d.terms.is_empty()) {
            return Err(invalid(format!("masking.deny_list[{}].terms", d.name), "list at least one term"));
        }
        let detector = Arc::new(Detector::new(&custom, &deny).map_err(|e| invalid("masking.custom", e.to_string()))?);
        let key = match &m.pseudonym_key {
            Some(src) => Some(self.read_secret(src, "masking.pseudonym_key")?),
            None => None,
        };
        let mut profiles = HashMap::new();
        for p in &m.profile {
            let f = |s: &str| format!("masking.profile[{}].{s}", p.name);
            if p.name == "none" || p.name.is_empty() {
                return Err(invalid(f("name"), "`none` and the empty name are reserved"));
            }
            let mut actions = Vec::new();
            for (entity, a) in &p.actions {
                actions.push((entity.clone(), action(&f(&format!("actions.{entity}")), a)?));
            }
            let mut fields = Vec::new();
            for (i, fc) in p.field.iter().enumerate() {
                let ff = f(&format!("field[{i}]"));
                let (selector, name) = match (&fc.key, &fc.path, &fc.column, &fc.proto) {
                    (Some(k), None, None, None) => (FieldSelector::Key(k.clone()), k.clone()),
                    (None, Some(path), None, None) => (
                        FieldSelector::path(path).ok_or_else(|| {
                            invalid(&ff, format!("`{path}` is not a JSON path like $.a.b or $.a[*].b"))
                        })?,
                        path.rsplit(['.', '[']).next().unwrap_or(path).trim_end_matches(']').to_owned(),
                    ),
                    (None, None, Some(c), None) => {
                        (FieldSelector::Column { table: fc.table.clone(), column: c.clone() }, c.clone())
                    }
                    (None, None, None, Some(pf)) => {
                        (FieldSelector::Proto(pf.clone()), pf.rsplit('.').next().unwrap_or(pf).to_owned())
                    }
                    _ => return Err(invalid(&ff, "set exactly one of key, path, column, proto")),
                };
                if fc.table.is_some() && fc.column.is_none() {
                    return Err(invalid(&ff, "`table` goes with `column`"));
                }
                fields.push(FieldRule {
                    selector,
                    action: action(&format!("{ff}.action"), &fc.action)?,
                    label: fc.label.clone().unwrap_or(name),
                });
            }
            let spec = ProfileSpec {
                name: p.name.clone(),
                default_action: action(&f("default_action"), &p.default_action)?,
                actions,
                min_confidence: p.min_confidence,
                fields,
                keep_year: p.keep_year,
            };
            let profile = Profile::new(detector.clone(), spec, key.as_deref().map(str::as_bytes))
                .map_err(|e| invalid(f("actions"), e.to_string()))?;
            if profiles.insert(p.name.clone(), Arc::new(profile)).is_some() {
                return Err(invalid(f("name"), "two profiles have this name"));
            }
        }
        let grpc = match &m.descriptor_set {
            None => None,
            Some(p) => {
                let path = self.resolve(p);
                let bytes = std::fs::read(&path)
                    .map_err(|e| invalid("masking.descriptor_set", format!("cannot read {}: {e}", path.display())))?;
                Some(Arc::new(
                    crate::mask::grpc::Schema::new(&bytes, m.grpc_delta_fields.clone())
                        .map_err(|e| invalid("masking.descriptor_set", e))?,
                ))
            }
        };
        Ok(Masking { profiles, grpc })
    }
}

impl Masking {
    fn profile(&self, field: &str, name: &str) -> Result<Option<Arc<Profile>>, ConfigError> {
        if name == "none" {
            return Ok(None);
        }
        self.profiles
            .get(name)
            .cloned()
            .map(Some)
            .ok_or_else(|| invalid(field, format!("no [[masking.profile]] is named `{name}`")))
    }

    /// A route's masking, from its `mask` and `mask_roles`.
    pub(super) fn route(
        &self,
        route: &str,
        mask: Option<&str>,
        roles: &[RoleMaskConfig],
    ) -> Result<Option<Arc<RouteMask>>, ConfigError> {
        if mask.is_none() && roles.is_empty() {
            return Ok(None);
        }
        let field = |f: &str| format!("route[{route}].{f}");
        let default = match mask {
            Some(name) => self.profile(&field("mask"), name)?,
            None => return Err(invalid(field("mask"), "mask_roles needs a default `mask` (a profile or \"none\")")),
        };
        let mut by_role = Vec::new();
        for r in roles {
            by_role.push((r.role.clone(), self.profile(&field("mask_roles"), &r.profile)?));
        }
        Ok(Some(Arc::new(RouteMask { default, by_role, grpc: self.grpc.clone() })))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::identity::Principal;

    const BASE: &str = r#"
[[route]]
name = "llm"
listen = "127.0.0.1:0"
protocol = "http"
upstream = "127.0.0.1:9"
mask = "agent"
mask_roles = [{ role = "clinician", profile = "clinical" }, { role = "auditor", profile = "none" }]

[[masking.custom]]
name = "EMPLOYEE_ID"
pattern = '\bE\d{6}\b'

[[masking.deny_list]]
name = "PROJECT"
terms = ["Bluebird"]

[[masking.profile]]
name = "agent"
actions = { EMPLOYEE_ID = "partial:2" }
[[masking.profile.field]]
key = "patient_name"
[[masking.profile.field]]
column = "ssn"
table = "patients"
action = "null"

[[masking.profile]]
name = "clinical"
default_action = "keep"
"#;

    fn err(text: &str) -> String {
        Config::parse(text).unwrap().build().unwrap_err().to_string()
    }

    #[test]
    fn profiles_resolve_per_role_and_custom_entities_work() {
        let s = Config::parse(BASE).unwrap().build().unwrap();
        let mask = s.routes[0].mask.as_ref().unwrap();
        let role = |r: &str| Principal { roles: [r.to_owned()].into(), ..Principal::anonymous() };
        let agent = mask.for_principal(&role("agent")).unwrap();
        assert_eq!(agent.name, "agent");
        assert_eq!(mask.for_principal(&role("clinician")).unwrap().name, "clinical");
        assert!(mask.for_principal(&role("auditor")).is_none(), "`none` is unmasked");
        let tally = crate::mask::Tally::default();
        assert_eq!(
            agent.mask_str("E123456 on Bluebird, SSN 219-09-9999", &tally),
            "*****56 on [PHI:PROJECT], SSN [PHI:SSN]"
        );
    }

    #[test]
    fn mistakes_are_refused_with_the_field_named() {
        assert!(err(&BASE.replace(r"'\bE\d{6}\b'", "'(unclosed'")).contains("EMPLOYEE_ID"));
        assert!(err(&BASE.replace("mask = \"agent\"", "mask = \"nobody\"")).contains("route[llm].mask"));
        assert!(err(&BASE.replace("partial:2", "sometimes")).contains("actions.EMPLOYEE_ID"));
        assert!(err(&BASE.replace("partial:2", "pseudonymize")).contains("pseudonym_key"));
        assert!(err(&BASE.replace("EMPLOYEE_ID = ", "NOT_AN_ENTITY = ")).contains("unknown entity NOT_AN_ENTITY"));
        assert!(err(&BASE.replace("protocol = \"http\"", "protocol = \"tcp\"")).contains("raw TCP"));
        assert!(err(&BASE.replace("key = \"patient_name\"", "key = \"a\"\npath = \"$.b\"")).contains("exactly one"));
        let no_default = BASE.replace("mask = \"agent\"\n", "");
        assert!(err(&no_default).contains("needs a default"));
        let missing =
            BASE.replace("[[masking.custom]]", "[masking]\ndescriptor_set = \"/nonexistent.pb\"\n\n[[masking.custom]]");
        assert!(err(&missing).contains("masking.descriptor_set"));
    }
}
