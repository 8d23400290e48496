//! The link's TCP and UDP settings in the two namespaces: the socket memory limits the scenario
//! raises (see [`super`]'s docs), what is in effect afterwards, ferry's QUIC congestion control as
//! its source chooses it, and UDP receive-buffer drops.
//!
//! Neighbours: [`super::run_profile`] tunes each link and puts what this reads in the notes.

use std::path::Path;

use anyhow::{Result, ensure};

use crate::netem::{EmulatedLink, Side};

/// The most a TCP socket may buffer (`tcp_rmem`/`tcp_wmem` max) and a UDP socket may be given
/// (`net.core.rmem_max`/`wmem_max`) in the namespaces: a tuned WAN host's 16 MiB.
const SOCKET_MEM_MAX: u64 = 16 << 20;

/// The sysctls the namespaces ended up with, for the notes.
pub(super) struct Tuning {
    /// `net.ipv4.tcp_congestion_control` in A (the TCP senders') and B (the receivers').
    pub(super) cc_a: String,
    pub(super) cc_b: String,
    /// One line describing socket memory limits as in effect.
    pub(super) memory: String,
}

/// Raises the TCP buffer limits in both namespaces (see the module docs), tries to raise the UDP
/// ones, and reads back what is in effect.
pub(super) fn tune(link: &EmulatedLink) -> Result<Tuning> {
    let mut core_refused = Vec::new();
    for side in [Side::A, Side::B] {
        for key in ["net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"] {
            let current = link.sysctl(side, key)?;
            let values: Vec<u64> = current.split_whitespace().filter_map(|v| v.parse().ok()).collect();
            ensure!(values.len() == 3, "unexpected {key} {current:?}");
            let max = values[2].max(SOCKET_MEM_MAX);
            link.set_sysctl(side, key, &format!("{} {} {max}", values[0], values[1]))?;
        }
        link.set_sysctl(side, "net.ipv4.tcp_no_metrics_save", "1")?;
        for key in ["net.core.rmem_max", "net.core.wmem_max"] {
            if link.set_sysctl(side, key, &SOCKET_MEM_MAX.to_string()).is_err()
                && !core_refused.contains(&key)
            {
                core_refused.push(key);
            }
        }
    }
    let read = |side, key| link.sysctl(side, key).unwrap_or_else(|e| format!("unreadable ({e})"));
    let mut memory = format!(
        "socket memory in the namespaces: tcp_rmem {} (B, receiving), tcp_wmem {} (A, sending), raised to a \
         max of at least 16 MiB as on a tuned WAN host (the host's tcp_wmem max is 4 MiB, ~750 Mbit/s for one \
         connection at 30 ms); net.core.rmem_max {} / wmem_max {}, rmem_default {} (B); tcp_no_metrics_save=1",
        read(Side::B, "net.ipv4.tcp_rmem"),
        read(Side::A, "net.ipv4.tcp_wmem"),
        read(Side::B, "net.core.rmem_max"),
        read(Side::B, "net.core.wmem_max"),
        read(Side::B, "net.core.rmem_default"),
    );
    if !core_refused.is_empty() {
        memory.push_str(&format!(
            "; {} could not be raised to 16 MiB: read-only inside a network namespace on this kernel \
             (copied from the host), so UDP sockets (QUIC) keep the host's limits",
            core_refused.join(" and ")
        ));
    }
    Ok(Tuning {
        cc_a: read(Side::A, "net.ipv4.tcp_congestion_control"),
        cc_b: read(Side::B, "net.ipv4.tcp_congestion_control"),
        memory,
    })
}

/// ferry's QUIC congestion control, as its `transport_config()` (in the source the binaries were
/// built from) chooses it: the controller factory it installs and what its documentation says
/// about congestion, or quinn's default when it installs none.
pub(super) fn ferry_congestion_control() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../net/src/tls/mod.rs");
    describe_congestion(&std::fs::read_to_string(path).unwrap_or_default())
}

/// [`ferry_congestion_control`] from the text of `net/src/tls/mod.rs`.
fn describe_congestion(source: &str) -> String {
    let Some((before, after)) = source.split_once("pub fn transport_config") else {
        return "unknown (no transport_config() in net/src/tls/mod.rs)".to_owned();
    };
    let mut doc: Vec<&str> = before
        .lines()
        .rev()
        .map(str::trim)
        .take_while(|line| line.starts_with("///"))
        .map(|line| line.trim_start_matches('/').trim())
        .collect();
    doc.reverse();
    let doc = doc.join(" ");
    let said: Vec<&str> = doc
        .split_inclusive(". ")
        .map(str::trim)
        .filter(|s| s.to_lowercase().contains("congestion"))
        .collect();
    let body = after.split("\n}\n").next().unwrap_or_default();
    let Some(call) = body.split("congestion_controller_factory(").nth(1) else {
        return "quinn's default, Cubic (ferry's transport_config() installs no controller)".to_owned();
    };
    let factory =
        call.split(';').next().unwrap_or_default().replace("Arc::new(", "").replace("::default()", "");
    let factory = factory.trim_end_matches(')').trim();
    match said.is_empty() {
        true => format!("{factory}, installed by ferry's transport_config()"),
        false => format!("{factory}, installed by ferry's transport_config(): \"{}\"", said.join(" ")),
    }
}

/// UDP `RcvbufErrors` (datagrams dropped because a socket's receive buffer was full) in `side`.
fn udp_rcvbuf_errors(link: &EmulatedLink, side: Side) -> u64 {
    let text = link
        .run_in(side, || std::fs::read_to_string("/proc/thread-self/net/snmp"))
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let mut udp = text.lines().filter(|line| line.starts_with("Udp:"));
    let (Some(header), Some(values)) = (udp.next(), udp.next()) else { return 0 };
    header
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

pub(super) fn both_sides_rcvbuf_errors(link: &EmulatedLink) -> u64 {
    udp_rcvbuf_errors(link, Side::A) + udp_rcvbuf_errors(link, Side::B)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_ferrys_congestion_control() {
        let plain =
            "/// The settings.\npub fn transport_config() -> T {\n    let t = T::default();\n    t\n}\n";
        assert!(describe_congestion(plain).starts_with("quinn's default, Cubic"));
        let chosen = "/// The settings.\n///\n/// Congestion control is BBR. More.\npub fn transport_config() -> T {\n    \
                      t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));\n}\n";
        assert_eq!(
            describe_congestion(chosen),
            "quinn::congestion::BbrConfig, installed by ferry's transport_config(): \"Congestion control is BBR.\""
        );
        assert!(describe_congestion("").starts_with("unknown"));
    }

    #[test]
    fn reads_the_transport_config_the_binaries_are_built_from() {
        let described = ferry_congestion_control();
        assert!(described.contains("PathAdaptiveConfig"), "{described}");
    }
}
