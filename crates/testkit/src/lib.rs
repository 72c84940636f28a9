//! # posture-testkit — real servers for tests, one copy
//!
//! The integration tests of the analyzer, dashboard, GPU source and
//! exporter are held to the real thing: they start real PostgreSQL 15,
//! mosquitto, Prometheus and node-exporter processes. This dev-only crate
//! (never a normal dependency, never published) starts each one on a free
//! 127.0.0.1 port in a throwaway directory, and stops it when the test is
//! done, even when it panics.
//!
//! ```text
//!  require(bin) ─ found ──► start ─► free_port() ─► tempdir + config ─► spawn ─► Proc::wait_port
//!        │                              Postgres   initdb + pg_ctl (as `postgres` when root); TLS-only variant;
//!        │                                         psql; the seeds' legacy posture_log table
//!        │                              Mosquitto  persistence on disk; extra listener lines (TLS)
//!        │                              NodeExporter textfile collector ◄── write()/set_gpu_usage()
//!        │                              Prometheus scrapes targets ◄── query(promql)
//!        └ missing ─► CI set: panic (the server is required) │ else: "SKIP: …" and None
//!  drop ─► kill (mosquitto, Prometheus, node-exporter) │ pg_ctl stop -m immediate (PostgreSQL)
//! ```
//!
//! Outage tests use the same handles: `stop()` and `restart()` keep the
//! port and the data, so a client sees the server go and come back.
//! `scripts/ci-services.sh` installs every binary named here.
//!
//! A helper that cannot do its job panics: it runs inside a test, where a
//! panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic the test

mod mosquitto;
mod postgres;
mod prometheus;
mod tls;

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub use mosquitto::Mosquitto;
pub use postgres::{PG_BIN, Postgres, SEEDS_POSTURE_LOG};
pub use prometheus::{GpuPrometheus, NodeExporter, Prometheus};
pub use tls::{make_ca, make_certs, openssl};

/// How long a server may take to listen after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Ports handed out come from here, below the kernel's ephemeral range
/// (`ip_local_port_range`, 32768 and up by default): a port taken from
/// that range (bind to port 0) can meanwhile become the local port of some
/// outgoing connection, and the server started on it then fails to bind.
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;

/// The next candidate port of this process: each test binary starts at its
/// own place in [`PORT_RANGE`] (from its pid) and never hands a port out
/// twice.
static NEXT_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A free TCP port on 127.0.0.1, outside the ephemeral range (see
/// [`PORT_RANGE`]); bound once to check it, then released for the server
/// the test starts.
pub fn free_port() -> u16 {
    let span = u32::from(PORT_RANGE.end - PORT_RANGE.start);
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT_PORT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let offset = u16::try_from(start.wrapping_add(n) % span).unwrap_or(0);
        let port = PORT_RANGE.start + offset;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Whether the tests run under CI (`CI` set), where every server is
/// required and a missing one fails the test instead of skipping it.
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// Gives up on a test that lacks something (`what`, with how to get it):
/// panics under CI, prints a `SKIP:` notice and returns `None` elsewhere.
pub fn skip_or_fail<T>(what: &str) -> Option<T> {
    assert!(!under_ci(), "{what} is required under CI");
    eprintln!("SKIP: {what}");
    None
}

/// The program `bin`: a path (containing `/`) that must exist, or a name
/// looked up on `PATH`, then in `/usr/sbin` and `/usr/bin`. When it is
/// missing: a panic under CI, a skip notice and `None` elsewhere
/// (`what` names it for people, e.g. "PostgreSQL 15").
pub fn require(bin: &str, what: &str) -> Option<PathBuf> {
    let found = if bin.contains('/') {
        Some(PathBuf::from(bin)).filter(|p| p.exists())
    } else {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    };
    found.or_else(|| {
        skip_or_fail(&format!(
            "{what} ({bin}) is not installed (scripts/ci-services.sh installs it)"
        ))
    })
}

/// Waits until something accepts connections on 127.0.0.1:`port`; panics
/// after 20 seconds.
pub fn wait_port(port: u16) {
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on 127.0.0.1:{port}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A spawned process, killed (SIGKILL) and reaped on drop, so a failing
/// test leaves nothing running.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    name: String,
}

impl Proc {
    /// Spawns `cmd`; `name` is for messages.
    pub fn spawn(cmd: &mut Command, name: &str) -> Self {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Self {
            child,
            name: name.to_string(),
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the process listens on 127.0.0.1:`port`; panics at
    /// once if it exits first, and after 20 seconds.
    pub fn wait_port(&mut self, port: u16) {
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}) before listening on {port}", self.name);
            }
            assert!(
                Instant::now() < deadline,
                "{} does not listen on 127.0.0.1:{port}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Stops it cleanly: SIGTERM, then waits for it to exit (a server
    /// writes its state on the way out).
    pub fn terminate(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_bindable_distinct_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        for &port in &ports {
            assert!(PORT_RANGE.contains(&port), "{port}");
        }
        TcpListener::bind(("127.0.0.1", ports[0])).unwrap();
    }

    #[test]
    fn require_finds_programs_by_path_and_by_name() {
        assert_eq!(
            require("/bin/sh", "a shell"),
            Some(PathBuf::from("/bin/sh"))
        );
        assert!(require("sh", "a shell").is_some_and(|p| p.ends_with("sh")));
        if !under_ci() {
            assert_eq!(require("/no/such/program", "nothing"), None);
            assert_eq!(require("no-such-program-anywhere", "nothing"), None);
        }
    }

    #[test]
    fn a_process_is_killed_on_drop_and_its_early_exit_reported() {
        let p = Proc::spawn(Command::new("sleep").arg("600"), "sleep");
        let pid = p.id();
        drop(p);
        // Killed and reaped: gone from /proc.
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "sleep {pid} still runs"
        );
        let mut quick = Proc::spawn(&mut Command::new("true"), "true");
        let port = free_port();
        let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| quick.wait_port(port)));
        let msg = died.unwrap_err();
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("true exited"), "{msg}");
    }
}
