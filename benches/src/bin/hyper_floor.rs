//! The floor under Airlock's HTTP path: a reverse proxy built from the same parts the gateway
//! uses (hyper-util's HTTP/1.1 + HTTP/2 server, its pooled legacy client over `HttpConnector`
//! with `TCP_NODELAY`, the multi-threaded tokio runtime, mimalloc) and nothing else: no
//! authentication, no policy, no journal, no header rewriting. `benches/http_compare.sh` runs it
//! beside nginx so the report can tell what the gateway's own work costs from what these parts
//! cost on this machine.
//!
//!   hyper_floor LISTEN UPSTREAM        (both `host:port`)

use std::convert::Infallible;

use http_body_util::{Either, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: hyper_floor LISTEN UPSTREAM");
    };
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(serve(listen, upstream))
}

async fn serve(listen: String, upstream: String) -> anyhow::Result<()> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new()).build(http);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    loop {
        let (io, _) = listener.accept().await?;
        io.set_nodelay(true)?;
        let (client, upstream) = (client.clone(), upstream.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                let (client, upstream) = (client.clone(), upstream.clone());
                async move {
                    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
                    let Ok(uri) = format!("http://{upstream}{path}").parse() else { return Ok(bad_gateway()) };
                    *req.uri_mut() = uri;
                    // HTTP/2 from the caller, HTTP/1.1 to the origin, as the gateway does.
                    *req.version_mut() = Version::HTTP_11;
                    Ok::<_, Infallible>(match client.request(req).await {
                        Ok(resp) => resp.map(Either::Left),
                        Err(_) => bad_gateway(),
                    })
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(TokioIo::new(io), service).await;
        });
    }
}

fn bad_gateway() -> Response<Either<Incoming, Empty<Bytes>>> {
    let mut resp = Response::new(Either::Right(Empty::new()));
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}
