//! The gateway's own outbound HTTP: OpenID discovery, JWKS downloads and notification webhooks.
//!
//! One pooled hyper client over rustls (system roots, or a CA file from the config). Every call has
//! a deadline and every response body a size limit, so a slow or hostile identity provider can
//! delay a decision but never hang the gateway or exhaust its memory.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Why an outbound call failed. Messages name the URL's scheme and authority only: a webhook's
/// path often carries its secret, and user-info is a credential.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum OutboundError {
    /// The URL does not parse.
    #[error("`{0}` is not a valid http(s) URL")]
    Url(String),
    /// Connecting or sending failed.
    #[error("request to {url} failed: {reason}")]
    Transport {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// No response before the deadline.
    #[error("request to {url} timed out after {after:?}")]
    Timeout {
        /// The URL.
        url: String,
        /// The deadline.
        after: Duration,
    },
    /// The server answered with a non-success status.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// The body was larger than allowed.
    #[error("response from {url} is larger than {max} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        max: usize,
    },
}

/// A pooled HTTP/1.1 client with per-call deadlines and body limits.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    /// A client that trusts `tls` for https URLs (plain http is allowed for loopback set-ups and
    /// tests; the config decides which URLs are used).
    pub fn new(tls: rustls::ClientConfig, timeout: Duration) -> Self {
        let https =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(https);
        Self { client, timeout }
    }

    /// `GET url`, returning the body if the status is 2xx and the body fits in `max` bytes.
    pub async fn get(&self, url: &str, max: usize) -> Result<Bytes, OutboundError> {
        self.send(Method::GET, url, None, max).await
    }

    /// `POST url` with a JSON body, returning the response body (bounded by `max`).
    pub async fn post_json(&self, url: &str, json: Vec<u8>, max: usize) -> Result<Bytes, OutboundError> {
        self.send(Method::POST, url, Some(json), max).await
    }

    async fn send(&self, method: Method, url: &str, body: Option<Vec<u8>>, max: usize) -> Result<Bytes, OutboundError> {
        let uri: Uri = url.parse().map_err(|_| OutboundError::Url(redact(url)))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(OutboundError::Url(redact(url)));
        }
        let shown = redact(url);
        let url = shown.as_str();
        let mut builder = Request::builder().method(method).uri(uri).header("user-agent", "airlock");
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        let req = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|_| OutboundError::Url(url.into()))?;
        let transport = |e: &dyn std::fmt::Display| OutboundError::Transport { url: url.into(), reason: e.to_string() };
        let call = async {
            let resp = self.client.request(req).await.map_err(|e| transport(&e))?;
            let status = resp.status();
            if !status.is_success() {
                return Err(OutboundError::Status { url: url.into(), status: status.as_u16() });
            }
            let collected = Limited::new(resp.into_body(), max).collect().await.map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    OutboundError::TooLarge { url: url.into(), max }
                } else {
                    transport(&e)
                }
            })?;
            Ok(collected.to_bytes())
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(OutboundError::Timeout { url: url.into(), after: self.timeout }),
        }
    }
}

/// `scheme://host[:port]/…` — what a log or an error may show of a URL.
pub fn redact(url: &str) -> String {
    match url.parse::<Uri>() {
        Ok(u) => {
            let host = u.host().unwrap_or("?");
            let port = u.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
            let rest = if u.path_and_query().is_some_and(|p| p.as_str() != "/") { "/…" } else { "" };
            format!("{}://{host}{port}{rest}", u.scheme_str().unwrap_or("?"))
        }
        Err(_) => "(unparsable URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_paths_or_credentials() {
        assert_eq!(
            redact("https://user:pw@hooks.example.org:8443/T0/B1/secret?x=1"),
            "https://hooks.example.org:8443/…"
        );
        assert_eq!(redact("http://127.0.0.1:9000"), "http://127.0.0.1:9000");
        assert_eq!(redact("not a url at all"), "(unparsable URL)");
    }
}
