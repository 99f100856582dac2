//! The Python with `websockets` (and PyJWT) that the interop and deflate tests drive:
//! `WSM_TEST_PYTHON`, or the venv at `target/py` (which `.ci/run` makes); when neither has
//! `websockets`, the first test that needs it makes the venv and installs it there. A missing
//! Python is a failure that says how to fix it, never a skip.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use super::{KillOnDrop, WAIT};

/// What `.ci/run` installs; the same specs here, so both make the same venv: `websockets` for
/// every script, PyJWT (with `cryptography`, for RS256) for `jwt_auth.py`.
const WEBSOCKETS_SPEC: &str = "websockets>=12,<16";
const PYJWT_SPEC: &str = "PyJWT[crypto]>=2.8,<3";

/// The crate's root (where `tests/` and `target/` are).
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A Python with `websockets`: `WSM_TEST_PYTHON`, else `target/py/bin/python`, made and
/// installed on first use (once per test binary). Panics, saying why and how to fix it, when
/// there is none and none can be made.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PYTHON.get_or_init(find_or_install_python) {
        Ok(python) => python.clone(),
        Err(why) => panic!("{why}"),
    }
}

/// The `websockets` version `python` imports (with PyJWT and `cryptography` beside it), or why
/// it cannot.
fn websockets_version(python: &Path) -> Result<String, String> {
    let out = Command::new(python)
        .args([
            "-c",
            "import websockets, jwt, cryptography; print(websockets.__version__)",
        ])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Run `cmd`; its output when it succeeds, otherwise a description with its status and stderr.
fn run_setup(cmd: &mut Command) -> Result<Output, String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| format!("`{shown}` did not run: {e}"))?;
    if out.status.success() {
        return Ok(out);
    }
    Err(format!(
        "`{shown}` failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

fn find_or_install_python() -> Result<PathBuf, String> {
    const FIX: &str = "Fix: install Python 3 with its venv module (Debian/Ubuntu: `apt-get \
                       install python3 python3-venv`) and network access to PyPI, then run the \
                       tests again (or `.ci/run`); or set WSM_TEST_PYTHON to a Python that has \
                       `websockets` installed.";
    if let Some(python) = std::env::var_os("WSM_TEST_PYTHON") {
        let python = PathBuf::from(python);
        return match websockets_version(&python) {
            Ok(_) => Ok(python),
            Err(why) => Err(format!(
                "WSM_TEST_PYTHON={} cannot import websockets and jwt: {why}\nFix: `{} -m pip \
                 install '{WEBSOCKETS_SPEC}' '{PYJWT_SPEC}'`, or unset WSM_TEST_PYTHON to let the tests make a venv \
                 in target/py.",
                python.display(),
                python.display()
            )),
        };
    }
    let venv = manifest_dir().join("target/py");
    let python = venv.join("bin/python");
    if websockets_version(&python).is_ok() {
        return Ok(python);
    }
    // No usable venv: make one (or repair it) and install websockets, as `.ci/run` does.
    let python3 = Command::new("python3").arg("--version").output();
    if !python3.as_ref().is_ok_and(|o| o.status.success()) {
        return Err(format!(
            "The Python interop tests need Python 3, and `python3` is not on PATH ({}).\n{FIX}",
            match python3 {
                Err(e) => e.to_string(),
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
            }
        ));
    }
    let runs = Command::new(&python)
        .args(["-c", "pass"])
        .status()
        .is_ok_and(|s| s.success());
    if !runs {
        std::fs::create_dir_all(manifest_dir().join("target")).map_err(|e| e.to_string())?;
        run_setup(
            Command::new("python3")
                .args(["-m", "venv", "--clear"])
                .arg(&venv),
        )
        .map_err(|e| format!("Making the venv for the Python interop tests failed: {e}\n{FIX}"))?;
    }
    run_setup(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        WEBSOCKETS_SPEC,
        PYJWT_SPEC,
    ]))
    .map_err(|e| {
        format!(
            "Installing {WEBSOCKETS_SPEC} and {PYJWT_SPEC} into {} failed: {e}\nFix: let pip reach PyPI (or a \
             mirror: PIP_INDEX_URL), then run the tests again (or `.ci/run`); or set \
             WSM_TEST_PYTHON to a Python that has `websockets` installed.",
            venv.display()
        )
    })?;
    let version = websockets_version(&python).map_err(|why| {
        format!(
            "websockets installed into {} but does not import: {why}\n{FIX}",
            venv.display()
        )
    })?;
    eprintln!("installed websockets {version} into {}", venv.display());
    Ok(python)
}

/// `tests/interop/<name>`.
pub fn interop_script(name: &str) -> PathBuf {
    manifest_dir().join("tests/interop").join(name)
}

/// A running `tests/interop/deflate_peer.py` (a Python `websockets` echo server with
/// permessage-deflate; see its header for what it answers).
pub struct DeflatePeer {
    _child: KillOnDrop,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
}

impl DeflatePeer {
    /// Start it; waits (bounded) for the port it prints.
    pub fn start(args: &[&str]) -> DeflatePeer {
        let mut cmd = Command::new(python());
        cmd.arg(interop_script("deflate_peer.py"))
            .args(args)
            .stdin(Stdio::piped());
        let (child, lines) = super::process::spawn_lines(&mut cmd, 1, "deflate_peer.py");
        let line = &lines[0];
        let port = line.trim().parse().expect("a port on the first line");
        DeflatePeer {
            _child: child,
            port,
        }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.port)
    }
}

/// Run `tests/interop/deflate_client.py` with `args` to its end, within 60 s (blocking: call
/// it from a blocking thread when the test's runtime must keep running, a proxy for example);
/// assert it exited 0 printing `ok` (the script checks what it was asked to, a 1009 included).
pub fn deflate_client_ok(args: &[String]) {
    let child = Command::new(python())
        .arg(interop_script("deflate_client.py"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    let mut guard = KillOnDrop(Some(child));
    let child = guard.0.take().expect("child");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("deflate_client.py {args:?} did not finish in 60 s"))
        .expect("python exits");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.trim() == "ok",
        "deflate_client.py {args:?}:\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
}
