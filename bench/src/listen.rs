//! How `duet serve` waits for its pinned client.
//!
//! By default the server outlasts strangers: a client with another certificate (or a failed
//! handshake, or an incompatible hello) is refused, learns why (an application close with the
//! reason, e.g. "the server pins another client certificate (expected ..., seen ...)"), and the
//! server goes on waiting. Refusals are logged on stderr at most once per
//! [`REFUSAL_LOG_EVERY`], with a count of those not shown. `--once` keeps the old behaviour
//! for scripts: the first connection attempt decides, and a refusal ends the command.

use crate::DuetError;
use duet_transport::quic::{QuicListener, QuicSession};
use duet_transport::TransportError;
use std::io::Write;
use std::time::{Duration, Instant};

/// At most one refusal line per this interval.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(1);

/// Waits for the pinned client (see the module documentation).
pub fn accept_client(listener: &QuicListener, once: bool) -> Result<QuicSession, DuetError> {
    if once {
        return Ok(listener.accept()?);
    }
    let mut log = RefusalLog::new(REFUSAL_LOG_EVERY);
    let session = listener
        .accept_pinned(&mut |e| log.refused(e, Instant::now(), &mut std::io::stderr().lock()));
    log.finish(&mut std::io::stderr().lock());
    Ok(session?)
}

/// A rate-limited log of refused connection attempts.
#[derive(Debug)]
pub struct RefusalLog {
    every: Duration,
    last: Option<Instant>,
    unshown: u64,
    total: u64,
}

impl RefusalLog {
    /// A log that writes at most one line per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            unshown: 0,
            total: 0,
        }
    }

    /// Records one refusal at `now`; writes a line when the last one is at least `every` old,
    /// with the count of refusals not shown since.
    pub fn refused(&mut self, e: &TransportError, now: Instant, out: &mut dyn Write) {
        self.total += 1;
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < self.every)
        {
            self.unshown += 1;
            return;
        }
        let more = match std::mem::take(&mut self.unshown) {
            0 => String::new(),
            n => format!(" ({n} more refused since the last line)"),
        };
        // a failed write to stderr only loses the log line
        let _ = writeln!(out, "duet serve: refused a connection: {e}{more}");
        self.last = Some(now);
    }

    /// Writes the count of refusals not shown yet, if any.
    pub fn finish(&mut self, out: &mut dyn Write) {
        if self.unshown > 0 {
            let _ = writeln!(
                out,
                "duet serve: {} more connection attempts refused",
                std::mem::take(&mut self.unshown)
            );
        }
    }

    /// Refusals recorded so far.
    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_one_line_per_interval_with_a_count() {
        let mut log = RefusalLog::new(Duration::from_secs(1));
        let mut out = Vec::new();
        let t0 = Instant::now();
        let e = TransportError::Refused {
            peer: "192.0.2.1:5".into(),
            reason: "no".into(),
        };
        for i in 0..50u64 {
            log.refused(&e, t0 + Duration::from_millis(i * 10), &mut out);
        }
        log.refused(&e, t0 + Duration::from_millis(1500), &mut out);
        log.finish(&mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[1].contains("(49 more refused since the last line)"),
            "{text}"
        );
        assert_eq!(log.total(), 51);
        let mut out = Vec::new();
        log.refused(&e, t0 + Duration::from_millis(1600), &mut out);
        log.finish(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("1 more connection attempts refused"),
            "{text}"
        );
    }
}
