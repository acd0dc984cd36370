//! The floor under Airlock's HTTP path: a reverse proxy built from the same parts the gateway
//! uses (hyper-util's HTTP/1.1 + HTTP/2 server, its pooled legacy client over `HttpConnector`
//! with `TCP_NODELAY`, the multi-threaded tokio runtime, mimalloc) and nothing else: no
//! authentication, no policy, no journal, no header rewriting. `benches/http_compare.sh` runs it
//! beside nginx so the report can tell what the gateway's own work costs from what these parts
//! cost on this machine.
//!
//! With `FLOOR_PER_CORE` set it runs one single-threaded runtime per core instead, each
//! accepting on its own `SO_REUSEPORT` listener with its own upstream pool (as nginx runs one
//! worker process per core): the fastest arrangement of these parts found on this machine.
//!
//!   [FLOOR_PER_CORE=1] hyper_floor LISTEN UPSTREAM        (both `host:port`)

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
    if std::env::var_os("FLOOR_PER_CORE").is_some() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let (listen, upstream) = (listen.clone(), upstream.clone());
                std::thread::spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?
                        .block_on(serve(listen, upstream, true))
                })
            })
            .collect();
        for t in threads {
            t.join().map_err(|_| anyhow::anyhow!("a thread panicked"))??;
        }
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(serve(listen, upstream, false))
}

async fn serve(listen: String, upstream: String, reuse: bool) -> anyhow::Result<()> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new()).build(http);
    let addr: std::net::SocketAddr = listen.parse()?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    if reuse {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    let listener = socket.listen(1024)?;
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
