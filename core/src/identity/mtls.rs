//! Principals from TLS client certificates.
//!
//! rustls has already verified the chain against the route's client CA, the validity period and
//! the key usage by the time this runs; here the leaf certificate is read (x509-parser) for the
//! name the route maps to a subject — CN, or a DNS, e-mail or URI subject alternative name — and
//! the roles that name is granted. The principal expires with the certificate, so a session that
//! outlives its certificate is ended.

use std::collections::BTreeSet;

use globset::{Glob, GlobMatcher};
use serde::Deserialize;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{AuthError, AuthMethod, Principal};

/// Which part of the certificate names the principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalFrom {
    /// The subject's common name.
    #[default]
    Cn,
    /// The first DNS subject alternative name.
    SanDns,
    /// The first e-mail (RFC 822) subject alternative name.
    SanEmail,
    /// The first URI subject alternative name (SPIFFE IDs, say).
    SanUri,
}

/// One rule: names matching `pattern` get `roles`.
#[derive(Debug, Clone)]
pub struct CertificateRule {
    pattern: String,
    matcher: GlobMatcher,
    roles: Vec<String>,
}

impl CertificateRule {
    /// A rule from a glob (`*.svc.internal`, `spiffe://prod/*`) and the roles it grants.
    pub fn new(pattern: &str, roles: Vec<String>) -> Result<Self, String> {
        let matcher = Glob::new(pattern).map_err(|e| e.to_string())?.compile_matcher();
        Ok(Self { pattern: pattern.to_owned(), matcher, roles })
    }

    /// The pattern as configured.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }
}

/// Maps certificate names to roles: every matching rule contributes its roles.
#[derive(Debug, Clone, Default)]
pub struct CertificateMapper {
    rules: Vec<CertificateRule>,
}

impl CertificateMapper {
    /// A mapper from rules.
    pub fn new(rules: Vec<CertificateRule>) -> Self {
        Self { rules }
    }

    fn roles_for(&self, name: &str) -> BTreeSet<String> {
        self.rules.iter().filter(|r| r.matcher.is_match(name)).flat_map(|r| r.roles.iter().cloned()).collect()
    }

    /// The principal for a verified leaf certificate (DER).
    pub fn principal(&self, leaf_der: &[u8], from: PrincipalFrom) -> Result<Principal, AuthError> {
        let (_, cert) = X509Certificate::from_der(leaf_der)
            .map_err(|e| AuthError::Certificate(format!("certificate does not parse: {e}")))?;
        let subject = name_of(&cert, from)?;
        let fingerprint = {
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf_der);
            crate::journal::crypto::hex(d.as_ref())
        };
        let email = match from {
            PrincipalFrom::SanEmail => Some(subject.clone()),
            _ => None,
        };
        Ok(Principal {
            roles: self.roles_for(&subject),
            subject,
            issuer: Some(cert.issuer().to_string()),
            name: None,
            email,
            groups: Vec::new(),
            method: AuthMethod::Mtls { fingerprint },
            expires_at: Some(cert.validity().not_after.timestamp()),
        })
    }
}

fn name_of(cert: &X509Certificate<'_>, from: PrincipalFrom) -> Result<String, AuthError> {
    let missing = |what: &str| AuthError::Certificate(format!("the certificate has no {what}"));
    let name = match from {
        PrincipalFrom::Cn => cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| missing("subject common name"))?,
        _ => {
            let san = cert
                .subject_alternative_name()
                .map_err(|e| AuthError::Certificate(format!("subjectAltName does not parse: {e}")))?
                .ok_or_else(|| missing("subjectAltName"))?;
            san.value
                .general_names
                .iter()
                .find_map(|n| match (from, n) {
                    (PrincipalFrom::SanDns, GeneralName::DNSName(s))
                    | (PrincipalFrom::SanEmail, GeneralName::RFC822Name(s))
                    | (PrincipalFrom::SanUri, GeneralName::URI(s)) => Some((*s).to_owned()),
                    _ => None,
                })
                .ok_or_else(|| missing(&format!("{from:?} subject alternative name")))?
        }
    };
    if name.is_empty() || name.len() > 512 {
        return Err(AuthError::Certificate("the mapped name is empty or longer than 512 bytes".into()));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, sans: &[&str]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn names_and_roles_come_from_the_chosen_field() {
        let der = cert("ward-7 reader", &["svc-a.prod.internal"]);
        let mapper = CertificateMapper::new(vec![
            CertificateRule::new("*.prod.internal", vec!["service".into()]).unwrap(),
            CertificateRule::new("svc-a.*", vec!["reader".into()]).unwrap(),
            CertificateRule::new("*.test.internal", vec!["nope".into()]).unwrap(),
        ]);
        let p = mapper.principal(&der, PrincipalFrom::SanDns).unwrap();
        assert_eq!(p.subject, "svc-a.prod.internal");
        assert_eq!(p.roles, BTreeSet::from(["service".to_string(), "reader".to_string()]));
        assert!(matches!(p.method, AuthMethod::Mtls { ref fingerprint } if fingerprint.len() == 64));
        assert!(p.expires_at.is_some());
        let p = mapper.principal(&der, PrincipalFrom::Cn).unwrap();
        assert_eq!(p.subject, "ward-7 reader");
        assert!(p.roles.is_empty());
    }

    #[test]
    fn missing_fields_and_garbage_are_errors() {
        let der = cert("x", &["svc.internal"]);
        let mapper = CertificateMapper::default();
        assert!(matches!(mapper.principal(&der, PrincipalFrom::SanUri), Err(AuthError::Certificate(_))));
        assert!(matches!(mapper.principal(b"not a certificate", PrincipalFrom::Cn), Err(AuthError::Certificate(_))));
    }
}
