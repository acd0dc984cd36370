//! Session runtimes: one single-threaded tokio runtime per core, each on its own thread.
//!
//! The accept loops run on the main (multi-threaded) runtime and hand every accepted connection
//! to the next shard in turn; the session and every task it spawns (its upstream connection's
//! driver, its pumps) then stay on that shard's thread, as nginx keeps a connection in one
//! worker process. A work-stealing runtime moves tasks and wakes other threads for them; on this
//! gateway's small requests that cost more than it balanced (see BENCHMARKS.md, stop 20).
//! The admin API, the accept loops, reloads and shutdown stay on the main runtime.

use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

thread_local! {
    /// Which session runtime this thread runs (0 on any other thread).
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// The index of the session runtime this thread runs; 0 on threads that run none.
pub(crate) fn current() -> usize {
    CURRENT.with(Cell::get)
}

/// The session runtimes.
#[derive(Debug)]
pub(crate) struct Shards {
    handles: Vec<Handle>,
    next: AtomicUsize,
    stop: CancellationToken,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Shards {
    /// Starts `n` runtimes (at least one).
    pub(crate) fn start(n: usize) -> std::io::Result<Self> {
        let stop = CancellationToken::new();
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        // Runtimes already started stop again if a later one cannot start.
        let failed = stop.clone().drop_guard();
        for i in 0..n.max(1) {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let stopped = stop.clone();
            let thread = std::thread::Builder::new().name(format!("airlock-shard-{i}")).spawn(move || {
                CURRENT.with(|c| c.set(i));
                match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => {
                        let _ = tx.send(Ok(rt.handle().clone()));
                        rt.block_on(stopped.cancelled());
                        // Not waiting without bound for its blocking pool (a DNS lookup in flight
                        // there could hold up the gateway's shutdown).
                        rt.shutdown_timeout(std::time::Duration::from_secs(1));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })?;
            threads.push(thread);
            match rx.recv() {
                Ok(Ok(handle)) => handles.push(handle),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(std::io::Error::other("a session runtime thread ended while starting")),
            }
        }
        failed.disarm();
        Ok(Self { handles, next: AtomicUsize::new(0), stop, threads: Mutex::new(threads) })
    }

    /// How many there are.
    pub(crate) fn len(&self) -> usize {
        self.handles.len()
    }

    /// The runtime for the next connection (round robin).
    pub(crate) fn next(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }

    /// Stops every runtime (dropping whatever still runs on them) and waits for their threads.
    /// Called once the sessions have drained.
    pub(crate) fn stop(&self) {
        self.stop.cancel();
        let threads = self.threads.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        // Without waiting: a gateway dropped without `shutdown` must not block its caller.
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::Shards;

    #[test]
    fn connections_go_round_the_runtimes_and_each_runs_on_its_own_thread() {
        let shards = Shards::start(2).unwrap();
        let names: Vec<String> = (0..4)
            .map(|_| {
                let (tx, rx) = std::sync::mpsc::channel();
                shards.next().spawn(async move {
                    let _ = tx.send(format!("{} {}", std::thread::current().name().unwrap_or(""), super::current()));
                });
                rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap()
            })
            .collect();
        assert_eq!(names, ["airlock-shard-0 0", "airlock-shard-1 1", "airlock-shard-0 0", "airlock-shard-1 1"]);
        shards.stop();
        // Stopped: what is spawned now never runs.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        shards.next().spawn(async move {
            let _ = tx.send(());
        });
        assert!(rx.recv_timeout(std::time::Duration::from_millis(200)).is_err());
    }
}
