//! The self-test's traffic: round trips (`ping`, or a UDP echo in-process), a TCP bulk
//! transfer and a paced UDP blast, each between sockets placed in the two namespaces.
//!
//! Neighbours: [`super::selftest()`] runs them and judges the results.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering as Atomic};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use nix::sys::socket::{getsockopt, setsockopt, sockopt};

use super::{ADDR_A, ADDR_B, EmulatedLink, Side, ms};

/// Round trips measured by `ping` or the in-process UDP echo.
#[derive(Debug)]
pub(super) struct RttSample {
    pub(super) method: &'static str,
    pub(super) sent: usize,
    pub(super) received: usize,
    pub(super) min_ms: f64,
    pub(super) avg_ms: f64,
    pub(super) max_ms: f64,
}

/// RTT from B to A: `ping -c 20 -i 0.05` if there is a ping, else a UDP echo in-process.
pub(super) fn measure_rtt(link: &EmulatedLink) -> Result<RttSample> {
    if let Some(ping) = find_program("ping") {
        let out = link
            .command(Side::B, &ping)
            .args(["-c", "20", "-i", "0.05", "-q", "-w", "15"])
            .arg(link.addr(Side::A).to_string())
            .stdin(Stdio::null())
            .output()
            .context("running ping")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(sample) = parse_ping(&text) {
            return Ok(sample);
        }
        eprintln!("netem: could not read ping's output ({}), using a UDP echo", text.trim());
    }
    udp_echo_rtt(link, 20)
}

/// `ping -q`'s summary: "20 packets transmitted, 19 received, …" and "… = min/avg/max/… ms".
fn parse_ping(text: &str) -> Option<RttSample> {
    let counts = text.lines().find(|line| line.contains("transmitted"))?;
    let numbers: Vec<usize> =
        counts.split(',').filter_map(|part| part.split_whitespace().next()?.parse().ok()).collect();
    let (sent, received) = (*numbers.first()?, *numbers.get(1)?);
    if received == 0 {
        return Some(RttSample { method: "ping", sent, received, min_ms: 0.0, avg_ms: 0.0, max_ms: 0.0 });
    }
    let rtts = text.lines().find(|line| line.contains("min/avg/max"))?;
    let values: Vec<f64> = rtts
        .split_once('=')?
        .1
        .trim()
        .trim_end_matches("ms")
        .split('/')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    Some(RttSample {
        method: "ping",
        sent,
        received,
        min_ms: *values.first()?,
        avg_ms: *values.get(1)?,
        max_ms: *values.get(2)?,
    })
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// `probes` UDP round trips from B to an echo in A, one at a time, at least 50 ms apart.
fn udp_echo_rtt(link: &EmulatedLink, probes: usize) -> Result<RttSample> {
    let server = link.run_in(Side::A, || UdpSocket::bind((ADDR_A, 0)))??;
    let client = link.run_in(Side::B, || UdpSocket::bind((ADDR_B, 0)))??;
    client.connect(server.local_addr()?)?;
    server.set_read_timeout(Some(Duration::from_millis(50)))?;
    let wait = (link.profile().rtt + link.profile().jitter * 2) * 3 + Duration::from_millis(200);
    client.set_read_timeout(Some(wait))?;
    let stop = AtomicBool::new(false);
    let rtts = thread::scope(|scope| -> Result<Vec<f64>> {
        scope.spawn(|| {
            let mut buf = [0u8; 64];
            while !stop.load(Atomic::Relaxed) {
                if let Ok((len, from)) = server.recv_from(&mut buf) {
                    let _ = server.send_to(&buf[..len], from);
                }
            }
        });
        let result = (|| -> Result<Vec<f64>> {
            let mut rtts = Vec::new();
            let mut buf = [0u8; 64];
            for probe in 0..probes as u64 {
                let sent = Instant::now();
                client.send(&probe.to_le_bytes())?;
                while let Ok(len) = client.recv(&mut buf) {
                    if len == 8 && buf[..8] == probe.to_le_bytes() {
                        rtts.push(ms(sent.elapsed()));
                        break;
                    }
                }
                thread::sleep(Duration::from_millis(50).saturating_sub(sent.elapsed()));
            }
            Ok(rtts)
        })();
        stop.store(true, Atomic::Relaxed);
        result
    })?;
    let received = rtts.len();
    let (min_ms, max_ms) = rtts.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let avg_ms = if received > 0 { rtts.iter().sum::<f64>() / received as f64 } else { 0.0 };
    Ok(RttSample { method: "udp echo", sent: probes, received, min_ms: min_ms.min(max_ms), avg_ms, max_ms })
}

#[derive(Debug)]
pub(super) struct TcpResult {
    pub(super) bytes: u64,
    pub(super) elapsed: Duration,
    /// Bytes received in each second since the connection was made.
    pub(super) per_second: Vec<u64>,
    /// The sender's congestion control.
    pub(super) congestion_control: String,
}

/// A sender in A writes for `duration` to a receiver in B, which reads until EOF. `cc` sets the
/// sender's congestion control on its socket: a namespace's default can only be one of the host's
/// `net.ipv4.tcp_allowed_congestion_control`, a socket's any available one (as root).
pub(super) fn tcp_bulk(link: &EmulatedLink, duration: Duration, cc: Option<&str>) -> Result<TcpResult> {
    let listener = link.run_in(Side::A, || TcpListener::bind((ADDR_A, 0)))??;
    let target = SocketAddr::new(link.addr(Side::A), listener.local_addr()?.port());
    let cc = cc.map(std::ffi::OsString::from);
    let sender =
        thread::Builder::new().name("selftest-tcp-tx".into()).spawn(move || -> Result<(u64, String)> {
            let (mut stream, _) = listener.accept()?;
            if let Some(cc) = &cc {
                setsockopt(&stream, sockopt::TcpCongestion, cc)
                    .with_context(|| format!("TCP_CONGESTION {cc:?}"))?;
            }
            let cc = getsockopt(&stream, sockopt::TcpCongestion)?.to_string_lossy().into_owned();
            let chunk = vec![0x5a_u8; 256 * 1024];
            let (start, mut sent) = (Instant::now(), 0u64);
            while start.elapsed() < duration {
                stream.write_all(&chunk)?;
                sent += chunk.len() as u64;
            }
            stream.shutdown(std::net::Shutdown::Write)?;
            Ok((sent, cc))
        })?;
    let mut stream = link
        .run_in(Side::B, || TcpStream::connect_timeout(&target, Duration::from_secs(10)))?
        .context("connecting from B to A")?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let start = Instant::now();
    let (mut bytes, mut per_second, mut buf) = (0u64, Vec::new(), vec![0u8; 1 << 20]);
    loop {
        let len = stream.read(&mut buf).context("receiving in B")?;
        if len == 0 {
            break;
        }
        bytes += len as u64;
        let second = start.elapsed().as_secs() as usize;
        if per_second.len() <= second {
            per_second.resize(second + 1, 0);
        }
        per_second[second] += len as u64;
    }
    let elapsed = start.elapsed();
    let (sent, congestion_control) = sender.join().map_err(|_| anyhow!("the TCP sender panicked"))??;
    ensure!(sent == bytes, "TCP: sent {sent} bytes but received {bytes}");
    Ok(TcpResult { bytes, elapsed, per_second, congestion_control })
}

#[derive(Debug)]
pub(super) struct UdpResult {
    pub(super) sent: u64,
    pub(super) send_errors: u64,
    pub(super) received: u64,
}

/// Datagrams of 1200 bytes from A to B, paced at `mbit` (IP bytes) for `duration`; counts the
/// distinct sequence numbers that arrive.
pub(super) fn udp_blast(link: &EmulatedLink, mbit: f64, duration: Duration) -> Result<UdpResult> {
    const PAYLOAD: usize = 1200;
    let receiver = link.run_in(Side::B, || UdpSocket::bind((ADDR_B, 0)))??;
    let sender = link.run_in(Side::A, || UdpSocket::bind((ADDR_A, 0)))??;
    // Root may exceed net.core.rmem_max: the receiver must not be the one dropping.
    let _ = setsockopt(&receiver, sockopt::RcvBufForce, &(32 << 20));
    receiver.set_read_timeout(Some(Duration::from_millis(100)))?;
    sender.connect(receiver.local_addr()?)?;
    let pps = (mbit * 1e6 / ((PAYLOAD + 28) * 8) as f64).max(1.0);
    let total = (pps * duration.as_secs_f64()) as u64;
    let stop = AtomicBool::new(false);
    let linger = (link.profile().rtt + link.profile().jitter * 2 + link.profile().reorder_gap) * 2
        + Duration::from_millis(300);
    thread::scope(|scope| -> Result<UdpResult> {
        let counter = scope.spawn(|| {
            let mut seen = vec![false; total as usize];
            let (mut received, mut buf) = (0u64, [0u8; 2048]);
            loop {
                match receiver.recv(&mut buf) {
                    Ok(len) if len >= 8 => {
                        let seq = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes")) as usize;
                        if let Some(slot) = seen.get_mut(seq)
                            && !*slot
                        {
                            *slot = true;
                            received += 1;
                        }
                    }
                    Ok(_) => {}
                    Err(_) if stop.load(Atomic::Relaxed) => break,
                    Err(_) => {}
                }
            }
            received
        });
        let (mut sent, mut send_errors, mut packet) = (0u64, 0u64, vec![0u8; PAYLOAD]);
        let start = Instant::now();
        for seq in 0..total {
            let due = start + Duration::from_secs_f64(seq as f64 / pps);
            let now = Instant::now();
            if due > now + Duration::from_micros(200) {
                thread::sleep(due - now);
            }
            packet[..8].copy_from_slice(&seq.to_le_bytes());
            match sender.send(&packet) {
                Ok(_) => sent += 1,
                Err(_) => send_errors += 1,
            }
        }
        thread::sleep(linger);
        stop.store(true, Atomic::Relaxed);
        let received = counter.join().map_err(|_| anyhow!("the UDP receiver panicked"))?;
        Ok(UdpResult { sent, send_errors, received })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_summary() {
        let text = "--- 10.201.0.1 ping statistics ---\n20 packets transmitted, 19 received, 5% packet loss, \
                    time 1000ms\nrtt min/avg/max/mdev = 80.101/80.402/81.003/0.200 ms\n";
        let sample = parse_ping(text).unwrap();
        assert_eq!((sample.sent, sample.received), (20, 19));
        assert_eq!((sample.min_ms, sample.avg_ms, sample.max_ms), (80.101, 80.402, 81.003));
    }
}
