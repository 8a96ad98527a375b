//! SIGINT and SIGTERM for the commands that talk to a peer (`serve`, `connect`, `infer`,
//! `generate`, `demo`, `bench`).
//!
//! Without this, a signal killed the process and sent nothing: the peer waited out its idle
//! timeout and then reported a lost connection. Now a signal closes every QUIC connection of
//! the process with a reason the peer prints ("the peer was interrupted (SIGINT)", through
//! [`duet_transport::quic::interrupt_all`]); the command's pending calls then fail at once, it
//! unwinds (cleaning up what it set up: child processes, network namespaces) and `main`
//! prints one line and exits with 130 (SIGINT) or 143 (SIGTERM). A command that does not
//! unwind within [`GRACE`] (busy in a long computation), a second signal, or a command with
//! no connection open (`bench op` on the in-memory pair) ends the process from the signal
//! thread at once with the same line and code.
//!
//! [`end_when_the_peer_is_lost`] is the other direction: a command whose peer was interrupted,
//! failed or vanished ends within [`LOST_GRACE`] even when it is busy computing.
//!
//! The signals are caught with tokio's `signal` feature (tokio is already the transport's
//! runtime; the feature adds only `signal-hook-registry`), on a thread of its own.

use crate::DuetError;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// How long a command may take to unwind after a signal before the process exits anyway.
pub const GRACE: Duration = Duration::from_secs(3);
/// How long the closes may take to leave (until every closed connection has drained).
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// A signal that ends the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Int,
    /// SIGTERM.
    Term,
}

impl Signal {
    /// `SIGINT` / `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Int => "SIGINT",
            Signal::Term => "SIGTERM",
        }
    }

    /// The shell's convention: 128 + the signal's number.
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Int => 130,
            Signal::Term => 143,
        }
    }
}

static RECEIVED: OnceLock<Signal> = OnceLock::new();
static TOLD: AtomicUsize = AtomicUsize::new(0);
/// Set once the connections are closed and the closes had their time to leave.
static CLOSED: AtomicBool = AtomicBool::new(false);
static EXITING: AtomicBool = AtomicBool::new(false);

/// The first signal received, if any.
pub fn received() -> Option<Signal> {
    RECEIVED.get().copied()
}

/// Catches SIGINT and SIGTERM from now on (see the module documentation). Returns once the
/// handlers are in place.
pub fn install() -> Result<(), DuetError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    std::thread::Builder::new()
        .name("duet-signals".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                let streams = signal(SignalKind::interrupt())
                    .and_then(|i| Ok((i, signal(SignalKind::terminate())?)));
                let (mut int, mut term) = match streams {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let sig = tokio::select! {
                    _ = int.recv() => Signal::Int,
                    _ = term.recv() => Signal::Term,
                };
                let _ = RECEIVED.set(sig);
                let told = duet_transport::quic::interrupt_all(
                    &format!("the peer was interrupted ({})", sig.name()),
                    CLOSE_WAIT,
                );
                TOLD.store(told, Ordering::Relaxed);
                CLOSED.store(true, Ordering::SeqCst);
                // the command now unwinds by itself (its calls on the closed connections
                // fail); with no connection open nothing would wake it, and a second signal
                // does not wait for it either
                let grace = if told == 0 { Duration::ZERO } else { GRACE };
                let _ = tokio::time::timeout(grace, async {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                })
                .await;
                exit_interrupted(sig);
            });
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(DuetError::Usage(format!("cannot catch signals: {e}"))),
        Err(_) => Err(DuetError::Usage("cannot catch signals".into())),
    }
}

/// How long after its peer is lost a command may take to end with its own error before the
/// process ends with the transport's.
pub const LOST_GRACE: Duration = Duration::from_secs(2);

/// Ends the process (exit code 1, one line naming the peer) when a session's peer is lost
/// (it was interrupted, failed, vanished or reset) and the command has not ended by itself
/// within [`LOST_GRACE`]: a command busy in a long computation would otherwise notice only
/// when it next uses the channel.
pub fn end_when_the_peer_is_lost() {
    duet_transport::quic::on_connection_lost(|e| {
        let msg = e.to_string().replace('\n', " ");
        // a hook must not block the transport's runtime
        let _ = std::thread::Builder::new()
            .name("duet-peer-lost".into())
            .spawn(move || {
                std::thread::sleep(LOST_GRACE);
                if received().is_some() || EXITING.swap(true, Ordering::SeqCst) {
                    return;
                }
                eprintln!("duet: error: {msg}");
                std::process::exit(1);
            });
    });
}

/// Prints the one-line reason and ends the process with the signal's exit code. Whichever of
/// `main` and the signal thread comes first does it; the other waits for the end.
pub fn exit_interrupted(sig: Signal) -> ! {
    if EXITING.swap(true, Ordering::SeqCst) {
        loop {
            std::thread::park();
        }
    }
    // `main` gets here as soon as its calls fail on the closed connections: the closes must
    // still leave before the process ends
    let t = std::time::Instant::now();
    while !CLOSED.load(Ordering::SeqCst) && t.elapsed() < CLOSE_WAIT + Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let told = match TOLD.load(Ordering::Relaxed) {
        0 => String::new(),
        1 => "; closed the session with the peer".into(),
        n => format!("; closed {n} connections with the peer"),
    };
    eprintln!("duet: error: interrupted by {}{told}", sig.name());
    std::process::exit(i32::from(sig.exit_code()))
}
