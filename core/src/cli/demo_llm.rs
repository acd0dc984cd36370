//! An OpenAI-compatible demo upstream: `POST /v1/chat/completions` (streaming as server-sent
//! events, and not) and `GET /v1/models`, answering with synthetic, entirely made-up patient
//! text. It checks the upstream credential, so the demo (and the tests) can show that the caller
//! never holds it: a request without `Authorization: Bearer <key>` gets the OpenAI-style 401.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, Infallible>;

/// Largest request body the demo reads.
const MAX_BODY: usize = 1024 * 1024;
/// The model the demo serves.
pub const MODEL: &str = "airlock-demo-llm";

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, message: &str, kind: &str) -> Response<Body> {
    json_response(status, &json!({"error": {"message": message, "type": kind, "code": null}}))
}

/// The demo's answer to the last user message: a made-up clinical note that mentions the
/// identifiers a masking layer would look for (none of them real).
pub fn answer(prompt: &str) -> String {
    format!(
        "Summary for the synthetic patient Jane Demo (MRN-100007, DOB 1980-01-07, SSN 219-09-9999, \
         phone (617) 555-0142, email jane.demo@example.org): stable, follow up in two weeks. You asked: {}",
        prompt.chars().take(200).collect::<String>()
    )
}

/// The streamed pieces: a few characters each, cut without regard to words — as a tokenizer
/// does — so identifiers arrive split across events.
fn pieces(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        cur.push(c);
        if cur.len() >= 5 {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() || out.is_empty() {
        out.push(cur);
    }
    out
}

async fn handle(req: Request<Incoming>, key: Arc<str>) -> Response<Body> {
    let expected = format!("Bearer {key}");
    let authorized =
        req.headers().get(hyper::header::AUTHORIZATION).is_some_and(|v| v.as_bytes() == expected.as_bytes());
    if !authorized {
        return error(StatusCode::UNAUTHORIZED, "Incorrect API key provided.", "invalid_request_error");
    }
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/v1/models") => json_response(
            StatusCode::OK,
            &json!({"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "airlock-demo"}]}),
        ),
        ("POST", "/v1/chat/completions") => {
            let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large", "invalid_request_error"),
            };
            let Ok(v) = serde_json::from_slice::<Value>(&body) else {
                return error(StatusCode::BAD_REQUEST, "body is not JSON", "invalid_request_error");
            };
            let prompt = v["messages"]
                .as_array()
                .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
                .and_then(|m| m["content"].as_str())
                .unwrap_or("")
                .to_owned();
            let model = v["model"].as_str().unwrap_or(MODEL).to_owned();
            let text = answer(&prompt);
            let created = crate::time::now_us() / 1_000_000;
            let id = format!("chatcmpl-{}", uuid::Uuid::now_v7().simple());
            if v["stream"].as_bool() == Some(true) {
                stream_response(id, model, created, text)
            } else {
                let usage = json!({"prompt_tokens": prompt.split_whitespace().count(), "completion_tokens": text.split_whitespace().count(),
                    "total_tokens": prompt.split_whitespace().count() + text.split_whitespace().count()});
                json_response(
                    StatusCode::OK,
                    &json!({"id": id, "object": "chat.completion", "created": created, "model": model,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                        "usage": usage}),
                )
            }
        }
        _ => error(StatusCode::NOT_FOUND, "Unknown endpoint.", "invalid_request_error"),
    }
}

/// One SSE event per piece, then the final chunk and `[DONE]`, as OpenAI streams.
fn stream_response(id: String, model: String, created: i64, text: String) -> Response<Body> {
    let (mut tx, rx) = http_body_util::channel::Channel::<Bytes, Infallible>::new(8);
    tokio::spawn(async move {
        let chunk = |delta: Value, finish: Value| {
            let v = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            Bytes::from(format!("data: {v}\n\n"))
        };
        if tx.send_data(chunk(json!({"role": "assistant", "content": ""}), Value::Null)).await.is_err() {
            return;
        }
        for w in pieces(&text) {
            if tx.send_data(chunk(json!({"content": w}), Value::Null)).await.is_err() {
                return;
            }
        }
        let _ = tx.send_data(chunk(json!({}), json!("stop"))).await;
        let _ = tx.send_data(Bytes::from_static(b"data: [DONE]\n\n")).await;
    });
    let mut r = Response::new(rx.boxed());
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/event-stream"));
    r
}

/// Serves the demo LLM on `listener` (HTTP/1.1 and h2c) until the task is dropped. Requests must
/// carry `Authorization: Bearer <key>`.
pub async fn serve(listener: TcpListener, key: String) {
    let key: Arc<str> = Arc::from(key);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        // Small streamed writes must not wait for the peer's delayed ACK (Nagle).
        let _ = stream.set_nodelay(true);
        let key = key.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let key = key.clone();
                async move { Ok::<_, Infallible>(handle(req, key).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}
