//! A real mosquitto broker.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Proc, free_port, require};

/// A real mosquitto broker on 127.0.0.1 with on-disk persistence:
/// sessions and queued QoS 1 messages survive [`Mosquitto::stop`] and
/// [`Mosquitto::restart`] (same port, same directory). Anonymous clients
/// are allowed; up to 10,000 messages are queued per client. Killed on drop.
#[derive(Debug)]
pub struct Mosquitto {
    bin: PathBuf,
    /// The listener's port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    proc: Option<Proc>,
}

impl Mosquitto {
    /// Starts a broker, or `None` (skip) when mosquitto is not installed
    /// outside CI.
    pub fn start() -> Option<Self> {
        Self::start_with(|_| String::new())
    }

    /// Like [`Mosquitto::start`], with extra settings for its listener:
    /// `extra` gets the broker's directory (to write files into, e.g.
    /// certificates made by [`crate::make_certs`]) and returns
    /// configuration lines (e.g. `cafile …\ncertfile …\nkeyfile …\n` for
    /// a TLS listener).
    pub fn start_with(extra: impl FnOnce(&Path) -> String) -> Option<Self> {
        let bin = require("/usr/sbin/mosquitto", "mosquitto")?;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // `user root`: as root, mosquitto would otherwise switch to its own
        // user, which cannot write the persistence file in our tempdir.
        let conf = format!(
            "per_listener_settings false\nlistener {port} 127.0.0.1\n{}allow_anonymous true\n\
             persistence true\npersistence_location {}/\nuser root\nmax_queued_messages 10000\n\
             log_dest stderr\n",
            extra(dir.path()),
            dir.path().display()
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf).unwrap();
        let mut m = Self {
            bin,
            port,
            dir,
            proc: None,
        };
        m.restart();
        Some(m)
    }

    /// The broker's directory (configuration, persistence, certificates).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts the broker (again) on the same port and persistence
    /// directory; returns once it listens. Panics if it is running.
    pub fn restart(&mut self) {
        assert!(self.proc.is_none(), "mosquitto is already running");
        let mut proc = Proc::spawn(
            Command::new(&self.bin)
                .arg("-c")
                .arg(self.dir.path().join("mosquitto.conf"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            "mosquitto",
        );
        proc.wait_port(self.port);
        self.proc = Some(proc);
    }

    /// Stops it cleanly (SIGTERM: it writes its persistence file first).
    pub fn stop(&mut self) {
        if let Some(p) = self.proc.take() {
            p.terminate();
        }
    }
}
