//! Throwaway certificates made with the `openssl` command, for servers
//! that must speak TLS (mosquitto's TLS listener, TLS-only PostgreSQL).

use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `openssl args…` in `dir`; panics when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let ok = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("running openssl")
        .success();
    assert!(ok, "openssl {args:?} failed");
}

/// Writes a throwaway self-signed CA into `dir`: `<name>.pem` (the
/// certificate, subject `CN=<cn>`) and `<name>.key` (its key).
pub fn make_ca(dir: &Path, name: &str, cn: &str) {
    let (key, pem, subject) = (
        format!("{name}.key"),
        format!("{name}.pem"),
        format!("/CN={cn}"),
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// Writes a throwaway CA (`ca.pem`, `ca.key`, by [`make_ca`]) and a server
/// certificate signed by it (`server.pem`, `server.key`, for
/// `CN=localhost`) into `dir`; its subjectAltName is `san` (e.g.
/// `DNS:localhost,IP:127.0.0.1`), so a test chooses which host names verify.
pub fn make_certs(dir: &Path, san: &str) {
    make_ca(dir, "ca", "posture-farm test CA");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}
