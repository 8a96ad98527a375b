//! A sub-channel of a QUIC session: one unidirectional stream each way.

use super::{block_on, map_read_error, map_write_error, PeerName};
use crate::wire::{read_frame, FrameError, FrameSource};
use crate::{Channel, ChannelStats, Counters, Result, TransportError, FRAME_HEADER_BYTES};
use quinn::{RecvStream, SendStream, VarInt};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Small messages are gathered up to this many bytes before they are handed to QUIC.
const SEND_BUFFER_BYTES: usize = 256 << 10;

/// One sub-channel of a [`QuicSession`](super::QuicSession). Blocking; drives the background
/// tokio runtime with `Handle::block_on`, so it must not be used from inside an async task.
pub struct QuicChannel {
    pub(super) id: u32,
    pub(super) send: SendStream,
    pub(super) recv: RecvState,
    pub(super) handle: Handle,
    pub(super) counters: Arc<Counters>,
    pub(super) peer: PeerName,
    pub(super) max_frame: u64,
    pub(super) recv_timeout: Duration,
    pub(super) out: Vec<u8>,
    pub(super) conn: quinn::Connection,
}

/// The peer's stream of a sub-channel arrives when the peer opens it; until then we hold the
/// promise of it, so opening a sub-channel never waits for the peer.
pub(super) enum RecvState {
    Ready(RecvStream),
    Pending(oneshot::Receiver<RecvStream>),
    Failed,
}

/// Waits for the peer's stream if it has not arrived yet.
async fn ready<'a>(
    state: &'a mut RecvState,
    conn: &quinn::Connection,
    peer: &PeerName,
) -> Result<&'a mut RecvStream> {
    if let RecvState::Pending(rx) = state {
        match rx.await {
            Ok(r) => *state = RecvState::Ready(r),
            Err(_) => {
                *state = RecvState::Failed;
                return Err(conn
                    .close_reason()
                    .map(|e| super::map_connection_error(e, peer))
                    .unwrap_or(TransportError::PeerClosed {
                        peer: peer.0.clone(),
                    }));
            }
        }
    }
    match state {
        RecvState::Ready(r) => Ok(r),
        _ => Err(TransportError::PeerClosed {
            peer: peer.0.clone(),
        }),
    }
}

impl std::fmt::Debug for QuicChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicChannel")
            .field("id", &self.id)
            .field("peer", &self.peer.0)
            .finish_non_exhaustive()
    }
}

impl QuicChannel {
    fn write_out(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let peer = &self.peer;
        let send = &mut self.send;
        block_on(&self.handle, async { send.write_all(&out).await })?
            .map_err(|e| map_write_error(e, peer))?;
        self.out = out;
        self.out.clear();
        Ok(())
    }

    /// Receives one frame of `T` words of at most `max_bytes` under the timeout (see
    /// [`crate::wire::read_frame`]). A refused frame that was skipped leaves the sub-channel
    /// usable; any other failure (a frame above the frame limit, a broken stream, the timeout
    /// in the middle of a frame) leaves it failed: later receives fail at once and the peer's
    /// stream is stopped, so it cannot make us buffer more.
    fn recv_frame<T: bytemuck::Pod>(&mut self, max_bytes: u64) -> Result<Vec<T>> {
        self.write_out()?;
        if matches!(self.recv, RecvState::Failed) {
            // the connection's end says more than the sub-channel's
            return Err(self
                .conn
                .close_reason()
                .map(|e| super::map_connection_error(e, &self.peer))
                .unwrap_or_else(|| TransportError::ConnectionLost {
                    peer: self.peer.0.clone(),
                    reason: format!("sub-channel {} failed earlier in this session", self.id),
                }));
        }
        let peer = &self.peer;
        let state = &mut self.recv;
        let conn = &self.conn;
        let limit = self.max_frame;
        let timeout = self.recv_timeout;
        let fut = async {
            let recv = ready(state, conn, peer).await.map_err(FrameError::Broken)?;
            let mut src = QuicSource { recv, peer };
            read_frame::<_, T>(&mut src, limit, max_bytes, &peer.0).await
        };
        let res = block_on(&self.handle, async {
            tokio::time::timeout(timeout, fut).await
        })?;
        match res {
            Ok(Ok(buf)) => {
                self.counters.on_recv(buf.len() * std::mem::size_of::<T>());
                Ok(buf)
            }
            Ok(Err(FrameError::Skipped(e))) => Err(e),
            Ok(Err(FrameError::Broken(e))) => {
                self.fail();
                Err(e)
            }
            Err(_) => {
                self.fail();
                Err(TransportError::Timeout {
                    peer: self.peer.0.clone(),
                    after: timeout,
                })
            }
        }
    }

    /// Marks the receive side failed and tells the peer to stop sending on it.
    fn fail(&mut self) {
        if let RecvState::Ready(r) = &mut self.recv {
            let _ = r.stop(VarInt::from_u32(super::STOP_FAILED));
        }
        self.recv = RecvState::Failed;
    }
}

/// The peer's stream of a sub-channel as a source of frames.
struct QuicSource<'a> {
    recv: &'a mut RecvStream,
    peer: &'a PeerName,
}

impl FrameSource for QuicSource<'_> {
    async fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        self.recv
            .read_exact(buf)
            .await
            .map_err(|e| map_read_error(e, self.peer))
    }
}

impl Channel for QuicChannel {
    fn send_bytes(&mut self, data: &[u8]) -> Result<()> {
        let header = (data.len() as u64).to_le_bytes();
        if self.out.len() + FRAME_HEADER_BYTES + data.len() <= SEND_BUFFER_BYTES {
            self.out.extend_from_slice(&header);
            self.out.extend_from_slice(data);
        } else {
            self.out.extend_from_slice(&header);
            self.write_out()?;
            let peer = &self.peer;
            let send = &mut self.send;
            block_on(&self.handle, async { send.write_all(data).await })?
                .map_err(|e| map_write_error(e, peer))?;
        }
        self.counters.on_send(data.len());
        Ok(())
    }

    fn recv_bytes_max(&mut self, max: usize) -> Result<Vec<u8>> {
        self.recv_frame::<u8>(max as u64)
    }

    fn flush(&mut self) -> Result<()> {
        self.write_out()
    }

    fn stats(&self) -> ChannelStats {
        self.counters.snapshot()
    }

    fn peer(&self) -> &str {
        &self.peer.0
    }

    fn recv_u64s_max(&mut self, max: usize) -> Result<Vec<u64>> {
        self.recv_frame::<u64>((max as u64).saturating_mul(8))
    }

    fn max_frame(&self) -> u64 {
        self.max_frame
    }

    fn set_max_frame(&mut self, max: u64) {
        self.max_frame = max;
    }
}

impl Drop for QuicChannel {
    fn drop(&mut self) {
        // Best effort: deliver what is buffered, then end our stream. Errors here mean the
        // connection is already gone, which the peer sees on its own.
        let _ = self.write_out();
        let _ = self.send.finish();
    }
}
