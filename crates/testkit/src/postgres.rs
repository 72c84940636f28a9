//! A throwaway PostgreSQL 15 cluster.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{free_port, make_certs, require};

/// Where Debian's PostgreSQL 15 server programs are.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The `posture_log` table the earlier Python analyzer's users have (the
/// seeds' Supabase DDL): `SERIAL` id, `TIMESTAMP` times, `INTEGER` angles,
/// every column nullable, no `frame_id`.
pub const SEEDS_POSTURE_LOG: &str = "CREATE TABLE posture_log (id SERIAL PRIMARY KEY, pi_id TEXT,
  filename TEXT, received_time TIMESTAMP, analyzed_time TIMESTAMP, neck_angle INTEGER,
  body_angle INTEGER, posture_status TEXT, landmarks_detected BOOLEAN, processed_by TEXT)";

/// A throwaway PostgreSQL 15 cluster in a temporary directory, listening on
/// 127.0.0.1 (trust authentication, user and database `postgres`, no fsync).
/// `initdb` refuses to run as root, so as root every server program runs as
/// the `postgres` user. Stopped (`-m immediate`) on drop.
#[derive(Debug)]
pub struct Postgres {
    dir: tempfile::TempDir,
    /// The server's port on 127.0.0.1.
    pub port: u16,
    running: bool,
    as_root: bool,
    /// Extra server options (`-c name=value …`).
    extra: String,
}

impl Postgres {
    /// Starts a cluster, or `None` (skip) when PostgreSQL 15 is not
    /// installed outside CI.
    pub fn start() -> Option<Self> {
        Self::start_with(|_| String::new())
    }

    /// A cluster that accepts TLS connections only (a plain one is
    /// refused): a throwaway CA in [`Postgres::dir`]`/tls/ca.pem`, and a
    /// server certificate that names only `DNS:localhost` (so
    /// `verify-full` to `127.0.0.1` fails). Needs `openssl`.
    pub fn start_tls() -> Option<Self> {
        require("/usr/bin/openssl", "openssl")?;
        Self::start_with(|dir| {
            let tls = dir.join("tls");
            std::fs::create_dir_all(&tls).unwrap();
            make_certs(&tls, "DNS:localhost");
            std::fs::write(
                tls.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
            )
            .unwrap();
            format!(
                "-c ssl=on -c ssl_cert_file={0}/server.pem -c ssl_key_file={0}/server.key -c hba_file={0}/pg_hba.conf",
                tls.display()
            )
        })
    }

    /// Like [`Postgres::start`]; `prepare` gets the cluster's directory
    /// before `initdb` (to write files into) and returns extra server
    /// options (`-c name=value …`). A private key at `tls/server.key` is
    /// made readable by its owner only, as PostgreSQL demands.
    pub fn start_with(prepare: impl FnOnce(&Path) -> String) -> Option<Self> {
        require(&format!("{PG_BIN}/initdb"), "PostgreSQL 15")?;
        let dir = tempfile::tempdir().unwrap();
        let extra = prepare(dir.path());
        let as_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        if as_root {
            // initdb refuses to run as root: hand the directory to `postgres`.
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown -R postgres:postgres failed");
        }
        let key = dir.path().join("tls/server.key");
        if key.exists() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let mut pg = Self {
            dir,
            port: free_port(),
            running: false,
            as_root,
            extra,
        };
        let ok = pg
            .cmd("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(pg.data())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "initdb failed");
        pg.restart();
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn cmd(&self, tool: &str) -> Command {
        let bin = format!("{PG_BIN}/{tool}");
        if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &bin]);
            c
        } else {
            Command::new(bin)
        }
    }

    /// The cluster's directory (`data/`, `log`, the socket, `tls/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts the server (again) on the same port and data; returns once it
    /// accepts connections (panics with its log if it does not).
    pub fn restart(&mut self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off {}",
            self.port,
            self.dir.path().display(),
            self.extra
        );
        let ok = self
            .cmd("pg_ctl")
            .args(["start", "-w", "-t", "30", "-D"])
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .arg("-o")
            .arg(opts)
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "pg_ctl start failed: {}",
            std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
        );
        self.running = true;
    }

    /// Stops the server (fast shutdown: sessions are cut), for outage tests.
    pub fn stop(&mut self) {
        let _ = self
            .cmd("pg_ctl")
            .args(["stop", "-w", "-m", "fast", "-D"])
            .arg(self.data())
            .stdout(Stdio::null())
            .status();
        self.running = false;
    }

    /// Runs `sql` through `psql` as `postgres` (stopping at the first
    /// error, which panics); its output, unaligned and without headers.
    pub fn psql(&self, sql: &str) -> String {
        let out = self
            .cmd("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
            .args(["-At", "-v", "ON_ERROR_STOP=1", "-p"])
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates the seeds' table ([`SEEDS_POSTURE_LOG`]) holding `rows`:
    /// SQL tuples of its columns after `id`, e.g. `('pi1', 'old.jpg',
    /// '2025-06-01 10:00:00', '2025-06-01 10:00:01', 12, 3, 'Good', true,
    /// 'jetson1')`.
    pub fn create_seeds_table(&self, rows: &[&str]) {
        let mut sql = format!("{SEEDS_POSTURE_LOG};");
        if !rows.is_empty() {
            sql.push_str(&format!(
                "INSERT INTO posture_log (pi_id, filename, received_time, analyzed_time, \
                 neck_angle, body_angle, posture_status, landmarks_detected, processed_by) VALUES {};",
                rows.join(", ")
            ));
        }
        self.psql(&sql);
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .cmd("pg_ctl")
                .args(["stop", "-m", "immediate", "-D"])
                .arg(self.data())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
