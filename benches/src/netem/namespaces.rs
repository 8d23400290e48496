//! The kernel side of the link: the two network namespaces (made, entered, deleted, also on a
//! signal or by the next run when a process died), their TUN devices and sysctls, and the
//! checks that the emulator can run here at all.
//!
//! Neighbours: [`super::EmulatedLink`] owns what this makes; [`super::relay`] moves packets
//! between the TUN devices.

use std::fs::{File, OpenOptions};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

use anyhow::{Context, Result, bail, ensure};
use nix::errno::Errno;
use nix::libc;
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{SigSet, Signal};

use super::{MTU, TUN_NAME};

/// Prefix of the namespaces' names; the owner's pid follows the side (`fbench-a-<pid>`).
const NS_PREFIX: &str = "fbench-";
/// `txqueuelen` of the TUN devices: packets the kernel queues for the relay before dropping.
const TUN_TXQUEUELEN: u32 = 2000;

/// Names of the namespaces this process made and has not deleted yet (for
/// [`cleanup_on_signals`]).
static LIVE_NAMESPACES: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Links started by this process so far, to name their namespaces apart.
static LINKS_STARTED: AtomicU32 = AtomicU32::new(0);

/// Names for a new link's two namespaces: `fbench-a-<pid>` and `fbench-b-<pid>`, with `-<n>`
/// after the pid for the n-th link this process starts after its first.
pub(super) fn new_names() -> [String; 2] {
    let pid = std::process::id();
    let suffix = match LINKS_STARTED.fetch_add(1, Ordering::Relaxed) {
        0 => pid.to_string(),
        n => format!("{pid}-{n}"),
    };
    [format!("{NS_PREFIX}a-{suffix}"), format!("{NS_PREFIX}b-{suffix}")]
}

/// Network namespaces made by this process, deleted on drop.
#[derive(Debug, Default)]
pub(super) struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    pub(super) fn add(&mut self, name: &str) -> Result<()> {
        if Path::new("/run/netns").join(name).exists() {
            // Left by an earlier process that had our pid (e.g. in a previous container).
            delete_namespace(name);
        }
        ip(&["netns", "add", name])?;
        self.names.push(name.to_string());
        lock_live().push(name.to_string());
        Ok(())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            delete_namespace(name);
            lock_live().retain(|live| live != name);
        }
    }
}

fn lock_live() -> std::sync::MutexGuard<'static, Vec<String>> {
    LIVE_NAMESPACES.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn delete_namespace(name: &str) {
    let status = Command::new("ip").args(["netns", "delete", name]).stderr(Stdio::null()).status();
    if !matches!(status, Ok(s) if s.success()) && Path::new("/run/netns").join(name).exists() {
        eprintln!("netem: could not delete network namespace {name}");
    }
}

/// Deletes `fbench-*` namespaces whose owner process is gone.
pub(super) fn remove_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = namespace_owner(&name) else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("netem: removing stale network namespace {name} (process {pid} is gone)");
            delete_namespace(&name);
        }
    }
}

/// The pid in a namespace name `fbench-<a|b>-<pid>[-<n>]`.
fn namespace_owner(name: &str) -> Option<u32> {
    let mut parts = name.strip_prefix(NS_PREFIX)?.split('-');
    if !matches!(parts.next()?, "a" | "b") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Runs `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("running `ip` (iproute2)")?;
    ensure!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// `TUNSETIFF`: attaches `tun` (an open `/dev/net/tun`) to a new TUN device `name` (IFF_TUN,
/// IFF_NO_PI) in the calling thread's network namespace.
#[allow(unsafe_code)] // the one ioctl of this module; nix has no safe wrapper for it
fn tun_set_iff(tun: &File, name: &str) -> Result<()> {
    ensure!(name.len() < libc::IFNAMSIZ, "interface name {name:?} too long");
    // SAFETY: `ifreq` is plain old data (arrays, integers, pointers, unions of them); all zeroes
    // is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads (and writes back the name into) a `struct ifreq`, which `request`
    // is, and it lives for the duration of the call; the fd is open.
    let result = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut request) };
    Errno::result(result).with_context(|| format!("TUNSETIFF {name}"))?;
    Ok(())
}

/// Runs `f` on a fresh thread that has joined the network namespace `netns`.
pub(super) fn in_namespace<T: Send>(netns: &File, f: impl FnOnce() -> T + Send) -> Result<T> {
    thread::scope(|scope| {
        let thread = thread::Builder::new()
            .name("netem-setns".into())
            .spawn_scoped(scope, move || -> Result<T> {
                setns(netns, CloneFlags::CLONE_NEWNET).context("setns into the network namespace")?;
                Ok(f())
            })
            .context("spawning a thread")?;
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// One side's kernel objects: the namespace's fd, its TUN device, its `/proc/net/dev`.
#[derive(Debug)]
pub(super) struct SideHandles {
    pub(super) netns: File,
    pub(super) tun: File,
    pub(super) net_dev: Mutex<File>,
}

pub(super) fn setup_side(namespace: &str, local: Ipv4Addr, peer: Ipv4Addr) -> Result<SideHandles> {
    let netns_path = Path::new("/run/netns").join(namespace);
    let netns = File::open(&netns_path).with_context(|| format!("opening {}", netns_path.display()))?;
    let (tun, net_dev) = in_namespace(&netns, || -> Result<(File, File)> {
        let tun = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .context("opening /dev/net/tun")?;
        tun_set_iff(&tun, TUN_NAME)?;
        // No IPv6 on the link: router solicitations and MLD reports would ride it.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{TUN_NAME}/disable_ipv6"), "1");
        // Opened here, this file shows this namespace's devices from whatever thread reads it.
        let net_dev = File::open("/proc/thread-self/net/dev").context("opening /proc/thread-self/net/dev")?;
        Ok((tun, net_dev))
    })??;
    let (local, peer, txqueuelen) = (local.to_string(), peer.to_string(), TUN_TXQUEUELEN.to_string());
    let mtu = MTU.to_string();
    ip(&["-n", namespace, "link", "set", "lo", "up"])?;
    ip(&["-n", namespace, "addr", "add", &local, "peer", &peer, "dev", TUN_NAME])?;
    ip(&["-n", namespace, "link", "set", TUN_NAME, "mtu", &mtu, "txqueuelen", &txqueuelen, "up"])?;
    Ok(SideHandles { netns, tun, net_dev: Mutex::new(net_dev) })
}

pub(super) fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

/// Fails with a clear message when the emulator cannot work here.
pub(super) fn preflight() -> Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "the link emulator needs root (network namespaces, TUN devices)"
    );
    ensure!(
        Path::new("/dev/net/tun").exists(),
        "/dev/net/tun is missing (no TUN support; try `modprobe tun`)"
    );
    match Command::new("ip").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            bail!("the `ip` command is missing (install iproute2)")
        }
        Err(e) => Err(e).context("running `ip -V`"),
    }
}

/// Deletes this process's namespaces on SIGINT, SIGTERM or SIGHUP, then exits (status 128 +
/// signal). Call it at the start of `main`'s scenario, before any other thread exists: it blocks
/// those signals in the calling thread (new threads inherit that) and waits for them on a thread
/// of its own (call it once). Child processes start with no signal blocked.
pub fn cleanup_on_signals() -> Result<()> {
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(signal);
    }
    signals.thread_block().context("blocking SIGINT/SIGTERM/SIGHUP")?;
    thread::Builder::new()
        .name("netem-signals".into())
        .spawn(move || {
            if let Ok(signal) = signals.wait() {
                let names = lock_live().clone();
                for name in &names {
                    delete_namespace(name);
                }
                eprintln!("netem: {signal}: deleted network namespaces {names:?}");
                std::process::exit(128 + signal as i32);
            }
        })
        .context("spawning the signal thread")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_owner_parses_names() {
        assert_eq!(namespace_owner("fbench-a-1234"), Some(1234));
        assert_eq!(namespace_owner("fbench-b-1234-2"), Some(1234));
        assert_eq!(namespace_owner("fbench-c-1234"), None);
        assert_eq!(namespace_owner("other-a-1"), None);
    }
}
