//! TLS set-up on both sides of the gateway, on rustls with the aws-lc-rs provider (the same crypto
//! library the journal uses), plus the description of a finished handshake for the journal.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::journal::record::TlsMeta;

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file is missing, unreadable, or holds no usable item.
    #[error("cannot load {what} from {path}: {reason}")]
    Pem {
        /// `certificate`, `private key` or `CA bundle`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the material (a key that does not match its certificate, say).
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    /// The system trust store could not be read.
    #[error("no system root certificates could be loaded; set `ca`")]
    NoRoots,
    /// The client-certificate verifier could not be built (an unusable CA, say).
    #[error("client certificate verifier: {0}")]
    Verifier(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn load_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_err = |reason: String| TlsError::Pem { what, path: path.to_path_buf(), reason };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_err("no PEM certificate found".into()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        what: "private key",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// A client-facing TLS acceptor from a PEM chain and key. With `client_ca`, every caller must
/// present a certificate that chains to it (mutual TLS); rustls answers an untrusted, expired or
/// missing certificate with the matching TLS alert during the handshake.
pub fn acceptor(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<TlsAcceptor, TlsError> {
    acceptor_with_alpn(cert, key, client_ca, None, &[])
}

/// [`acceptor`] that offers these ALPN protocols, in preference order; with `client_crl`, a
/// client certificate that a CRL in that PEM file lists as revoked is refused at the handshake.
pub fn acceptor_with_alpn(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    client_crl: Option<&Path>,
    alpn: &[&[u8]],
) -> Result<TlsAcceptor, TlsError> {
    let certs = load_certs(cert, "certificate")?;
    let key = load_key(key)?;
    let builder = ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in load_certs(ca, "client CA bundle")? {
                roots.add(c)?;
            }
            let mut verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            if let Some(path) = client_crl {
                let pem_err = |reason: String| TlsError::Pem { what: "client CRL", path: path.to_path_buf(), reason };
                let crls: Vec<CertificateRevocationListDer<'static>> =
                    CertificateRevocationListDer::pem_file_iter(path)
                        .map_err(|e| pem_err(e.to_string()))?
                        .collect::<Result<_, _>>()
                        .map_err(|e| pem_err(e.to_string()))?;
                if crls.is_empty() {
                    return Err(pem_err("no PEM CRL found".into()));
                }
                // The callers' own certificates are checked (the CAs' are the trust anchors),
                // and one whose status no CRL gives is refused.
                verifier = verifier.with_crls(crls).only_check_end_entity_revocation();
            }
            let verifier = verifier.build().map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// An upstream TLS connector that trusts `ca` (or the system roots) and optionally presents a
/// client certificate.
pub fn connector(ca: Option<&Path>, client_auth: Option<(PathBuf, PathBuf)>) -> Result<TlsConnector, TlsError> {
    Ok(TlsConnector::from(Arc::new(client_config(ca, client_auth)?)))
}

/// A client configuration that trusts `ca` (or the system roots) and optionally presents a client
/// certificate. Used towards upstreams and for the gateway's own outbound HTTP (JWKS, webhooks).
pub fn client_config(ca: Option<&Path>, client_auth: Option<(PathBuf, PathBuf)>) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(ca) => {
            for cert in load_certs(ca, "CA bundle")? {
                roots.add(cert)?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(TlsError::NoRoots);
            }
        }
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(match client_auth {
        Some((cert, key)) => builder.with_client_auth_cert(load_certs(&cert, "certificate")?, load_key(&key)?)?,
        None => builder.with_no_client_auth(),
    })
}

/// The client configuration for the gateway's own outbound HTTP (JWKS, webhooks): `ca`, or the
/// system roots — and if the system has none, an empty store, so that plain-http set-ups still
/// start and an https call fails with a clear certificate error instead.
pub fn outbound_client_config(ca: Option<&Path>) -> Result<ClientConfig, TlsError> {
    match client_config(ca, None) {
        Err(TlsError::NoRoots) => Ok(ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth()),
        other => other,
    }
}

/// What the journal keeps about a finished handshake.
pub fn describe(conn: &rustls::CommonState, server_name: Option<&str>) -> TlsMeta {
    TlsMeta {
        version: conn.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default(),
        cipher_suite: conn.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())).unwrap_or_default(),
        server_name: server_name.map(str::to_owned),
        alpn: conn.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()),
    }
}
