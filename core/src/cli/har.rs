//! `airlock replay ID --format har`: an HTTP session (one request and its response) as a HAR 1.2
//! document that browser developer tools import.
//!
//! Built from the journal alone: the request and response heads (HTTP/1.1 text form, credentials
//! already `[redacted]`), the bodies as delivered, trailers as `_trailers`, and the timings from
//! the record timestamps. A request refused before forwarding has no journaled request head; its
//! method and path come from the decision record, and the response is the refusal the caller got.

use serde_json::{Value, json};

use crate::journal::read::{Content, SessionRecord};
use crate::journal::record::{Direction, RecordKind};
use crate::time::format_us;

/// A head's first line and its headers.
struct Head {
    first: String,
    headers: Vec<(String, String)>,
}

fn parse_head(bytes: &[u8]) -> Head {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("").to_owned();
    let headers = lines.filter_map(|l| l.split_once(": ").map(|(k, v)| (k.to_owned(), v.to_owned()))).collect();
    Head { first, headers }
}

fn headers_json(h: &[(String, String)]) -> Value {
    Value::Array(h.iter().map(|(k, v)| json!({"name": k, "value": v})).collect())
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// HAR `content`/`postData` text: UTF-8 as is, anything else base64.
fn body_json(bytes: &[u8], mime: &str, post: bool) -> Value {
    let (text, encoding) = match std::str::from_utf8(bytes) {
        Ok(t) => (t.to_owned(), None),
        Err(_) => {
            use base64::Engine as _;
            (base64::engine::general_purpose::STANDARD.encode(bytes), Some("base64"))
        }
    };
    if post {
        // HAR 1.2's postData has no `encoding`: say so in a custom field rather than pass base64
        // off as the body.
        let mut v = json!({"mimeType": mime, "params": [], "text": text});
        if let Some(e) = encoding {
            v["_encoding"] = json!(e);
        }
        v
    } else {
        let mut v = json!({"size": bytes.len(), "mimeType": mime, "text": text});
        if let Some(e) = encoding {
            v["encoding"] = json!(e);
        }
        v
    }
}

fn ms(from_us: i64, to_us: i64) -> f64 {
    (to_us.saturating_sub(from_us).max(0) as f64) / 1000.0
}

/// The HAR document for one HTTP session, or an error saying why it cannot be one.
pub(super) fn har(records: &[SessionRecord]) -> anyhow::Result<Value> {
    let mut open = None;
    let mut summary = None;
    let mut heads: [Vec<(i64, Head)>; 2] = [Vec::new(), Vec::new()];
    let mut bodies: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut last_request_us = None;
    let mut close_us = None;
    for r in records {
        match &r.record.kind {
            RecordKind::SessionOpen(m) => open = Some(m.clone()),
            RecordKind::Decision(d) => summary = Some(d.request.clone()),
            RecordKind::SessionClose(_) => close_us = Some(r.record.time_us),
            RecordKind::UpstreamConnected(_) => {}
            RecordKind::Data(f) => {
                let side = f.direction as usize;
                let Some(Content::Bytes(b)) = &r.content else {
                    anyhow::bail!("the session's payloads cannot be opened (no master key, or the key was shredded)");
                };
                if f.head {
                    heads[side].push((r.record.time_us, parse_head(b)));
                } else {
                    bodies[side].extend_from_slice(b);
                }
                if f.direction == Direction::ClientToUpstream {
                    last_request_us = Some(r.record.time_us);
                }
            }
        }
    }
    let open = open.ok_or_else(|| anyhow::anyhow!("the session has no session-open record"))?;
    anyhow::ensure!(open.protocol == "http", "HAR export needs an HTTP session; this one is `{}`", open.protocol);
    let started = records.first().map_or(0, |r| r.record.time_us);
    let scheme = if open.tls.is_some() { "https" } else { "http" };

    // The request: its journaled head, or for a refused request the decision's summary
    // (`GET /path`, `/package.Service/Method` for gRPC, `mcp tools/call NAME` for MCP).
    let (req_first, req_headers) = match heads[0].first() {
        Some((_, h)) => (h.first.clone(), h.headers.clone()),
        None => {
            let summary = summary.unwrap_or_default();
            let line = match summary.split_once(' ') {
                Some((m, p)) if p.starts_with('/') && !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) => {
                    format!("{m} {p} HTTP/1.1")
                }
                _ if summary.starts_with('/') => format!("POST {summary} HTTP/2"),
                _ => "POST / HTTP/1.1".to_owned(),
            };
            (line, Vec::new())
        }
    };
    let mut parts = req_first.split(' ');
    let method = parts.next().unwrap_or("GET").to_owned();
    let target = parts.next().unwrap_or("/").to_owned();
    let http_version = parts.next().unwrap_or("HTTP/1.1").to_owned();
    let url = format!("{scheme}://{}{target}", open.listen_addr);
    let query: Vec<Value> = url::form_urlencoded_pairs(target.split_once('?').map_or("", |(_, q)| q))
        .into_iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    let mut request = json!({
        "method": method, "url": url, "httpVersion": http_version, "cookies": [],
        "headers": headers_json(&req_headers), "queryString": query, "headersSize": -1,
        "bodySize": bodies[0].len(),
    });
    if !bodies[0].is_empty() {
        let mime = header(&req_headers, "content-type").unwrap_or("application/octet-stream");
        request["postData"] = body_json(&bodies[0], mime, true);
    }

    // The response: the first head from the upstream side; later ones are trailers.
    let (resp_us, response) = match heads[1].first() {
        Some((t, h)) => {
            let mut p = h.first.splitn(3, ' ');
            let version = p.next().unwrap_or("HTTP/1.1").to_owned();
            let status: u16 = p.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let text = p.next().unwrap_or("").to_owned();
            let mime = header(&h.headers, "content-type").unwrap_or("application/octet-stream");
            let mut v = json!({
                "status": status, "statusText": text, "httpVersion": version, "cookies": [],
                "headers": headers_json(&h.headers), "content": body_json(&bodies[1], mime, false),
                "redirectURL": header(&h.headers, "location").unwrap_or(""), "headersSize": -1,
                "bodySize": bodies[1].len(),
            });
            let trailers: Vec<(String, String)> =
                heads[1].iter().skip(1).flat_map(|(_, h)| h.headers.clone()).collect();
            if !trailers.is_empty() {
                v["_trailers"] = headers_json(&trailers);
            }
            (*t, v)
        }
        None => (
            close_us.unwrap_or(started),
            json!({"status": 0, "statusText": "no response (see the session's close reason)", "httpVersion": http_version,
                "cookies": [], "headers": [], "content": {"size": 0, "mimeType": "x-unknown"}, "redirectURL": "",
                "headersSize": -1, "bodySize": -1}),
        ),
    };
    let sent_us = last_request_us.unwrap_or(started).min(resp_us).max(started);
    let end_us = close_us.unwrap_or(resp_us).max(resp_us);
    let timings = json!({"send": ms(started, sent_us), "wait": ms(sent_us, resp_us), "receive": ms(resp_us, end_us)});
    Ok(json!({
        "log": {
            "version": "1.2",
            "creator": {"name": "airlock", "version": env!("CARGO_PKG_VERSION")},
            "entries": [{
                "startedDateTime": format_us(started),
                "time": ms(started, end_us),
                "request": request,
                "response": response,
                "cache": {},
                "timings": timings,
                "serverIPAddress": open.upstream.rsplit_once(':').map_or(open.upstream.as_str(), |(h, _)| h).trim_matches(['[', ']']),
                "connection": open.connection.unwrap_or_default(),
                "_principal": open.principal,
                "_route": open.route,
            }],
        }
    }))
}

/// Minimal `application/x-www-form-urlencoded` splitting for HAR's `queryString`.
mod url {
    pub(super) fn form_urlencoded_pairs(q: &str) -> Vec<(String, String)> {
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }
}
