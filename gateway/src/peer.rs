//! Who is on the other end of a connection: address, TLS parameters, the verified
//! client certificate, and whether the connection is busy. Built once per connection
//! by `conn.rs` and shared by every request on it; nothing here is ever taken from a
//! request's own bytes.

use crate::auth::mtls::ClientCert;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the gateway knows about a connection; attached to every request on it.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls_version: &'static str,
    pub cipher: String,
    pub alpn: Option<String>,
    /// The verified client certificate, when one was presented.
    pub client_cert: Option<ClientCert>,
    /// Requests in flight on this connection, and when the last one ended.
    pub activity: Arc<Activity>,
}

/// Tracks whether a connection is idle.
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    served: AtomicUsize,
    last: Mutex<Instant>,
    /// Whether any request has arrived yet (its headers were read in full).
    started: AtomicBool,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
            started: AtomicBool::new(false),
        })
    }

    /// Marks a request as started; the guard marks it ended.
    pub fn enter(self: &Arc<Self>) -> ActivityGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.started.store(true, Ordering::Relaxed);
        ActivityGuard(Arc::clone(self))
    }

    /// How long the connection has had no request in flight, if it has none now.
    pub fn idle_for(&self) -> Option<Duration> {
        (self.in_flight.load(Ordering::Relaxed) == 0).then(|| {
            self.last
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .elapsed()
        })
    }

    /// Requests that have ended on this connection.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }

    /// Whether a request has ever arrived on this connection.
    pub fn started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }
}

pub struct ActivityGuard(Arc<Activity>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.served.fetch_add(1, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
