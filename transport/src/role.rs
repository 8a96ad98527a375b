//! Party roles and the two-thread test harness.

use crate::{memory_pair, memory_session_pair, MemoryChannel, MemorySession};

/// Which party this is. The server holds the model weights, the client the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// Holds the weights.
    Server,
    /// Holds the input and learns the output.
    Client,
}

impl Role {
    /// The other party.
    pub fn peer(self) -> Role {
        match self {
            Role::Server => Role::Client,
            Role::Client => Role::Server,
        }
    }

    /// 0 for the server, 1 for the client (for indexing per-party data).
    pub fn index(self) -> usize {
        match self {
            Role::Server => 0,
            Role::Client => 1,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Server => "server",
            Role::Client => "client",
        })
    }
}

/// Runs `server` and `client` on two threads joined by an in-memory channel pair and returns
/// both results. A panic in either closure is re-raised here (this is a test harness). If one
/// side returns early, its channel is dropped and the other side's next receive fails with
/// `PeerClosed` instead of hanging.
pub fn run_two_party<S, C, RS, RC>(server: S, client: C) -> (RS, RC)
where
    S: FnOnce(MemoryChannel) -> RS + Send,
    C: FnOnce(MemoryChannel) -> RC + Send,
    RS: Send,
    RC: Send,
{
    let (a, b) = memory_pair();
    join_two(move || server(a), move || client(b))
}

/// Like [`run_two_party`] with whole sessions, for protocols that open several sub-channels.
pub fn run_two_party_sessions<S, C, RS, RC>(server: S, client: C) -> (RS, RC)
where
    S: FnOnce(MemorySession) -> RS + Send,
    C: FnOnce(MemorySession) -> RC + Send,
    RS: Send,
    RC: Send,
{
    let (a, b) = memory_session_pair();
    join_two(move || server(a), move || client(b))
}

fn join_two<S, C, RS, RC>(server: S, client: C) -> (RS, RC)
where
    S: FnOnce() -> RS + Send,
    C: FnOnce() -> RC + Send,
    RS: Send,
    RC: Send,
{
    std::thread::scope(|scope| {
        let s = scope.spawn(server);
        let c = scope.spawn(client);
        let rs = s.join();
        let rc = c.join();
        match (rs, rc) {
            (Ok(rs), Ok(rc)) => (rs, rc),
            (Err(p), _) | (_, Err(p)) => std::panic::resume_unwind(p),
        }
    })
}
