//! Interop with an independent client: Python's `websockets` (installed by `.ci/run` into a
//! venv under `target/py`) connects to the real `wsm serve --tls-cert --tls-key` binary over
//! `wss://`, trusting only a CA made at test time, and speaks the rooms protocol.
#![cfg(unix)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{spawn_wsm_serve, test_pki};

/// The venv's python with `websockets`, if it is there. Under CI (`CI` set) its absence is a
/// failure, not a skip: `.ci/run` installs it.
fn python() -> Option<PathBuf> {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/py/bin/python");
    let found = std::env::var_os("WSM_TEST_PYTHON")
        .map(PathBuf::from)
        .or(Some(venv))
        .filter(|p| {
            Command::new(p)
                .args(["-c", "import websockets"])
                .status()
                .is_ok_and(|s| s.success())
        });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "Python websockets missing: .ci/run installs it into target/py"
        );
        eprintln!("skipped: no Python with websockets (run .ci/run once to install it)");
    }
    found
}

/// Python `websockets`, trusting only the test CA, joins, publishes (broadcast and ack), echoes
/// and closes against `wsm serve --tls-cert --tls-key`.
#[test]
fn python_websockets_client_speaks_rooms_over_wss() {
    let Some(python) = python() else { return };
    let dir = std::env::temp_dir().join(format!("wsm-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (ca, cert, key) = test_pki();
    let (ca_path, cert_path, key_path) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    for (path, pem) in [(&ca_path, &ca), (&cert_path, &cert), (&key_path, &key)] {
        std::fs::write(path, pem).expect("write pem");
    }
    let (cert_arg, key_arg) = (
        cert_path.to_str().expect("utf-8 path"),
        key_path.to_str().expect("utf-8 path"),
    );
    let (_serve, url) = spawn_wsm_serve(&[
        "--bind",
        "127.0.0.1:0",
        "--tls-cert",
        cert_arg,
        "--tls-key",
        key_arg,
    ]);
    assert!(url.starts_with("wss://127.0.0.1:"), "{url}");
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/tls_rooms_client.py");
    let out = Command::new(python)
        .arg(script)
        .arg(&url)
        .arg(&ca_path)
        .output()
        .expect("python runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "python client failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}
