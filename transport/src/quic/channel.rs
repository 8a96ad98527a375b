//! A sub-channel of a QUIC session: one unidirectional stream each way.

use super::{block_on, map_read_error, map_write_error, PeerName};
use crate::{Channel, ChannelStats, Counters, Result, TransportError, FRAME_HEADER_BYTES};
use quinn::{RecvStream, SendStream};
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

    /// Reads one frame header and checks the announced length against the limit.
    async fn read_header(recv: &mut RecvStream, peer: &PeerName, max_frame: u64) -> Result<usize> {
        let mut h = [0u8; FRAME_HEADER_BYTES];
        recv.read_exact(&mut h)
            .await
            .map_err(|e| map_read_error(e, peer))?;
        let len = u64::from_le_bytes(h);
        if len > max_frame {
            return Err(TransportError::FrameTooLarge {
                peer: peer.0.clone(),
                len,
                limit: max_frame,
            });
        }
        usize::try_from(len).map_err(|_| TransportError::FrameTooLarge {
            peer: peer.0.clone(),
            len,
            limit: max_frame,
        })
    }

    /// Receives one frame into `make(len)`'s buffer, viewed as bytes, under the timeout.
    fn recv_frame<T: bytemuck::Pod + Default>(&mut self, unit: usize) -> Result<Vec<T>> {
        self.write_out()?;
        let peer = &self.peer;
        let state = &mut self.recv;
        let conn = &self.conn;
        let max = self.max_frame;
        let timeout = self.recv_timeout;
        let fut = async {
            let recv = ready(state, conn, peer).await?;
            let len = Self::read_header(recv, peer, max).await?;
            if len % unit != 0 {
                // Consume the frame so the stream stays aligned, then report it.
                let mut skip = vec![0u8; len];
                recv.read_exact(&mut skip)
                    .await
                    .map_err(|e| map_read_error(e, peer))?;
                return Err(TransportError::Malformed {
                    peer: peer.0.clone(),
                    what: format!(
                        "a frame of {len} bytes is not a whole number of {unit}-byte words"
                    ),
                });
            }
            let mut buf = vec![T::default(); len / unit];
            recv.read_exact(bytemuck::cast_slice_mut(&mut buf))
                .await
                .map_err(|e| map_read_error(e, peer))?;
            Ok(buf)
        };
        let res = block_on(&self.handle, async {
            tokio::time::timeout(timeout, fut).await
        })?;
        let buf = match res {
            Ok(r) => r?,
            Err(_) => {
                return Err(TransportError::Timeout {
                    peer: self.peer.0.clone(),
                    after: timeout,
                })
            }
        };
        self.counters.on_recv(buf.len() * unit);
        Ok(buf)
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

    fn recv_bytes(&mut self) -> Result<Vec<u8>> {
        self.recv_frame::<u8>(1)
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

    fn recv_u64s(&mut self) -> Result<Vec<u64>> {
        self.recv_frame::<u64>(8)
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
