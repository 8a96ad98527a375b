//! The process's live QUIC endpoints, so that an interrupt (SIGINT, SIGTERM) can close every
//! connection with a reason the peer prints instead of leaving it to wait for the idle timeout.
//!
//! Listeners, connecting clients and sessions register their endpoint for as long as they
//! live. Only [`interrupt_all`] reads the list; protocols never see it.

use super::{map_connection_error, PeerName, CLOSE_DONE};
use crate::TransportError;
use quinn::VarInt;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Application close code of an interrupted session.
pub(crate) const CLOSE_INTERRUPTED: u32 = 3;

struct Live {
    next: u64,
    endpoints: Vec<(u64, quinn::Endpoint)>,
    /// Set by [`interrupt_all`]: endpoints registered later are closed at once.
    interrupted: Option<String>,
}

static LIVE: Mutex<Live> = Mutex::new(Live {
    next: 0,
    endpoints: Vec::new(),
    interrupted: None,
});

/// An endpoint on the list while this value lives.
#[derive(Debug)]
pub(crate) struct Registration(Option<u64>);

impl Registration {
    pub(crate) fn new(endpoint: &quinn::Endpoint) -> Self {
        let Ok(mut live) = LIVE.lock() else {
            return Self(None);
        };
        if let Some(reason) = &live.interrupted {
            endpoint.close(VarInt::from_u32(CLOSE_INTERRUPTED), reason.as_bytes());
        }
        let id = live.next;
        live.next += 1;
        live.endpoints.push((id, endpoint.clone()));
        Self(Some(id))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let (Some(id), Ok(mut live)) = (self.0, LIVE.lock()) {
            live.endpoints.retain(|(i, _)| *i != id);
        }
    }
}

/// Closes every live QUIC connection and listener of this process with an application close
/// whose `reason` the peer prints (e.g. "the peer was interrupted (SIGINT)"); endpoints
/// created afterwards are closed as soon as they are made. Then waits up to `wait` for the
/// closes to be sent (until every closed connection has drained). Returns the number of
/// connections that were open. Local calls on a closed connection fail with
/// [`crate::TransportError::ClosedLocally`]; a pending accept ends with an error.
pub fn interrupt_all(reason: &str, wait: Duration) -> usize {
    let endpoints: Vec<quinn::Endpoint> = match LIVE.lock() {
        Ok(mut live) => {
            live.interrupted = Some(reason.to_string());
            live.endpoints.iter().map(|(_, e)| e.clone()).collect()
        }
        Err(_) => Vec::new(),
    };
    let open: usize = endpoints
        .iter()
        .map(quinn::Endpoint::open_connections)
        .sum();
    for e in &endpoints {
        e.close(VarInt::from_u32(CLOSE_INTERRUPTED), reason.as_bytes());
    }
    let t = Instant::now();
    while t.elapsed() < wait && endpoints.iter().any(|e| e.open_connections() > 0) {
        std::thread::sleep(Duration::from_millis(10));
    }
    open
}

type LostHook = Box<dyn Fn(&TransportError) + Send + Sync>;

static LOST_HOOK: OnceLock<LostHook> = OnceLock::new();

/// Calls `hook` (on a transport runtime thread) whenever a session's connection ends other
/// than by the orderly close or this side's own close: the peer closed it with a reason (it
/// was interrupted, refused, or failed), it vanished (idle timeout), or it reset. For programs
/// that prefer to end as soon as the peer is gone rather than when their computation next
/// uses the channel (the `duet` CLI). Set once per process: returns `false` (and drops
/// `hook`) if a hook is already set.
pub fn on_connection_lost(hook: impl Fn(&TransportError) + Send + Sync + 'static) -> bool {
    LOST_HOOK.set(Box::new(hook)).is_ok()
}

/// Waits for the end of `conn` and reports a loss to the hook.
pub(crate) async fn watch(conn: quinn::Connection, peer: PeerName) {
    let e = conn.closed().await;
    let lost = match &e {
        quinn::ConnectionError::ApplicationClosed(c) => {
            c.error_code != VarInt::from_u32(CLOSE_DONE)
        }
        quinn::ConnectionError::LocallyClosed => false,
        _ => true,
    };
    if lost {
        if let Some(hook) = LOST_HOOK.get() {
            hook(&map_connection_error(e, &peer));
        }
    }
}
