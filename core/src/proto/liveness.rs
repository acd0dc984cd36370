//! Whether an HTTP connection is doing anything: bytes moved either way, and requests in flight.
//!
//! hyper bounds the reading of a request head once it has begun, but nothing bounds a connection
//! that sends nothing at all: before its first bytes (the HTTP/1-or-2 sniff waits without a
//! limit), or an HTTP/2 connection with no stream open, or a keep-alive connection between
//! requests. Each one holds a slot of the route's connection cap. The watchdog here closes a
//! connection that has not begun a request within the head timeout of its start, and one that
//! has had no request in flight and no byte either way for the idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, sleep_until};

/// One connection's liveness.
#[derive(Debug)]
pub(crate) struct Liveness {
    start: Instant,
    /// Milliseconds after `start` of the last byte moved or request ended.
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    begun: AtomicBool,
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stale {
    /// No request began within the head timeout of the connection's start.
    NoRequest,
    /// No request in flight and no byte moved for the idle timeout.
    Idle,
}

impl Liveness {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            begun: AtomicBool::new(false),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// A request has begun; it is in flight until the guard (moved into its response body) is
    /// dropped.
    pub(crate) fn request(self: &Arc<Self>) -> InFlight {
        self.begun.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Returns once the connection is stale: no request begun within `first` of its start, or
    /// none in flight and nothing moved for `idle`.
    pub(crate) async fn stale(&self, first: Duration, idle: Duration) -> Stale {
        loop {
            let now = Instant::now();
            if !self.begun.load(Ordering::Relaxed) {
                let deadline = self.start + first;
                if now >= deadline {
                    return Stale::NoRequest;
                }
                sleep_until(deadline).await;
                continue;
            }
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle;
            if self.in_flight.load(Ordering::Acquire) == 0 && now >= deadline {
                return Stale::Idle;
            }
            // While a request is in flight, look again an idle period later.
            sleep_until(if now >= deadline { now + idle } else { deadline }).await;
        }
    }
}

/// A request in flight; dropping it ends the request.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Liveness>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until hyper has sent it (or dropped it).
pub(crate) struct Tracked<B> {
    pub(crate) inner: B,
    pub(crate) _flight: InFlight,
}

impl<B: hyper::body::Body<Data = Bytes> + Unpin> hyper::body::Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's socket, noting every byte moved.
pub(crate) struct Watched<T> {
    pub(crate) inner: T,
    pub(crate) live: Arc<Liveness>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.live.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.live.touch();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.live.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_stale_without_a_request_or_when_idle_between_requests() {
        let first = Duration::from_secs(10);
        let idle = Duration::from_secs(60);
        // Nothing begun: stale at the head timeout.
        let live = Liveness::new();
        let t0 = Instant::now();
        assert_eq!(live.stale(first, idle).await, Stale::NoRequest);
        assert_eq!(t0.elapsed(), first);

        // A request in flight for longer than the idle period keeps it; its end starts the count.
        let live = Liveness::new();
        let flight = live.request();
        let watching = {
            let live = live.clone();
            tokio::spawn(async move { live.stale(first, idle).await })
        };
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert!(!watching.is_finished());
        drop(flight);
        let ended = Instant::now();
        assert_eq!(watching.await.unwrap(), Stale::Idle);
        assert!(ended.elapsed() >= idle && ended.elapsed() <= idle * 2, "{:?}", ended.elapsed());
    }
}
