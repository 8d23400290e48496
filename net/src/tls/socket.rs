//! The UDP socket under every ferry endpoint: quinn's own, with segmentation-offload batches kept
//! within what the kernel takes in one send.
//!
//! quinn puts up to 10 datagrams of the path's MTU into one GSO send. With datagrams above
//! ~6.5 KB (loopback, jumbo-frame LANs) such a batch exceeds the 65,507-byte limit of one UDP
//! send; the kernel refuses it with `EMSGSIZE`, which quinn-udp drops without a word (it expects
//! that error only from MTU probes). Every datagram of the batch is then lost, and after a few such
//! losses quinn's black-hole detector drops the connection to 1,200-byte datagrams for a minute.
//! [`SplitSends`] hands the kernel such a batch in several sends of whole datagrams instead, and
//! receives into at most [`RECV_BATCH`] of quinn's receive buffers per call.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

/// Largest UDP payload one send may carry: the IPv4 length field (65,535) less the IPv4 and UDP
/// headers. IPv6 allows 20 bytes more; the smaller figure serves both.
pub const MAX_SEND_BYTES: usize = 65_535 - 20 - 8;

/// Most datagrams (or GRO batches) one receive call takes.
///
/// quinn reserves 32 receive slots of 4 MiB each (64 GRO segments of up to 64 KB) and hands them
/// all to every receive call; the kernel writes only the bytes that arrive, and a slot's pages
/// stay resident once written. On loopback, where each datagram is 64 KB, a puller had all 32
/// slots' first 64 KB resident within its first second (2.1 MiB of its ~28 MiB). Eight slots
/// still take 512 KiB per call, a few thousand calls a second at 1 GB/s, and keep a quarter of
/// that resident.
pub const RECV_BATCH: usize = 8;

/// An [`AsyncUdpSocket`] that splits a segmentation-offload transmit larger than
/// [`MAX_SEND_BYTES`] into sends of whole datagrams, each within the limit.
pub struct SplitSends {
    inner: Arc<dyn AsyncUdpSocket>,
}

impl SplitSends {
    pub fn new(inner: Arc<dyn AsyncUdpSocket>) -> Self {
        Self { inner }
    }
}

impl fmt::Debug for SplitSends {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SplitSends").field("inner", &self.inner).finish()
    }
}

/// The byte ranges of `len` bytes of datagrams of `segment` bytes (the last may be shorter) in
/// which to send them: whole datagrams, each range at most [`MAX_SEND_BYTES`] long unless one
/// datagram alone is longer.
pub fn send_ranges(len: usize, segment: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let step = MAX_SEND_BYTES.checked_div(segment).map_or(len.max(1), |n| n.max(1) * segment);
    (0..len).step_by(step).map(move |start| start..(start + step).min(len))
}

impl AsyncUdpSocket for SplitSends {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    /// Sends the transmit, in parts when it is a segmentation-offload batch too large for one
    /// send. If the socket's buffer fills after some parts went out, the caller is told
    /// `WouldBlock` and retries the whole transmit later: the parts sent twice are duplicates the
    /// peer discards, where dropping the rest would look like congestion (and like a shrunken
    /// path MTU).
    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let segment = match transmit.segment_size {
            Some(segment) if transmit.contents.len() > MAX_SEND_BYTES => segment,
            _ => return self.inner.try_send(transmit),
        };
        for range in send_ranges(transmit.contents.len(), segment) {
            let contents = &transmit.contents[range];
            let part = Transmit {
                destination: transmit.destination,
                ecn: transmit.ecn,
                contents,
                segment_size: (contents.len() > segment).then_some(segment),
                src_ip: transmit.src_ip,
            };
            self.inner.try_send(&part)?;
        }
        Ok(())
    }

    /// Receives into the first [`RECV_BATCH`] of quinn's buffers at most; see there.
    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let n = bufs.len().min(meta.len()).min(RECV_BATCH);
        self.inner.poll_recv(cx, &mut bufs[..n], &mut meta[..n])
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_whole_datagrams_within_the_limit() {
        for segment in [1200, 1452, 6000, 8952, 16_000, 33_000, 65_000] {
            for count in 1..=10 {
                for last_short in [0, 1, segment / 2] {
                    let len = segment * count - last_short.min(segment - 1);
                    let ranges: Vec<_> = send_ranges(len, segment).collect();
                    assert_eq!(ranges.first().map(|r| r.start), Some(0));
                    assert_eq!(ranges.last().map(|r| r.end), Some(len));
                    for pair in ranges.windows(2) {
                        assert_eq!(pair[0].end, pair[1].start);
                        // Every range but the last holds whole datagrams.
                        assert_eq!(pair[0].len() % segment, 0, "segment {segment} count {count}");
                    }
                    for r in &ranges {
                        assert!(r.len() <= MAX_SEND_BYTES.max(segment), "{r:?} of segment {segment}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_batch_within_the_limit_is_one_range() {
        assert_eq!(send_ranges(10 * 1452, 1452).count(), 1);
        assert_eq!(send_ranges(7 * 8952, 8952).count(), 1);
        assert_eq!(send_ranges(10 * 8952, 8952).count(), 2);
        assert_eq!(send_ranges(10 * 65_000, 65_000).count(), 10);
    }

    #[tokio::test]
    async fn a_receive_takes_at_most_a_batch_and_loses_nothing() {
        use quinn::Runtime;
        let std_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = std_socket.local_addr().unwrap();
        let socket = SplitSends::new(quinn::TokioRuntime.wrap_udp_socket(std_socket).unwrap());
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sent = 3 * RECV_BATCH + 2;
        for i in 0..sent {
            sender.send_to(&[i as u8; 100], addr).unwrap();
        }
        // quinn hands every call 32 slots; the socket fills at most RECV_BATCH of them.
        let mut storage = vec![[0u8; 2048]; 32];
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while got.len() < sent && std::time::Instant::now() < deadline {
            let mut bufs: Vec<io::IoSliceMut<'_>> =
                storage.iter_mut().map(|b| io::IoSliceMut::new(b)).collect();
            let mut meta = [RecvMeta::default(); 32];
            let recv = std::future::poll_fn(|cx| socket.poll_recv(cx, &mut bufs, &mut meta));
            let n = tokio::time::timeout_at(deadline.into(), recv)
                .await
                .expect("a datagram sent on loopback never arrived")
                .unwrap();
            assert!((1..=RECV_BATCH).contains(&n), "{n} datagrams in one call");
            for (m, b) in meta.iter().zip(&bufs).take(n) {
                // A GRO batch holds several datagrams of `stride` bytes.
                got.extend(b[..m.len].chunks(m.stride).map(|d| d[0]));
            }
        }
        assert_eq!(got, (0..sent).map(|i| i as u8).collect::<Vec<_>>());
    }
}
