//! Harness for the end-to-end tests: starts the real local parts each test
//! needs (moto_server, and in other modules dockerd, a registry, RabbitMQ,
//! Fossa nodes, network namespaces) and stops them when dropped.
//!
//! Parts come from the environment `tests/run.sh` prepares: Debian packages
//! and the Python venv at `$FOSSA_TEST_VENV` (default `<repo>/.venv`). A
//! missing part makes the test fail with a message saying how to install it;
//! nothing is skipped.

pub mod bootstrap;
pub mod browser;
pub mod docker;
pub mod fargate;
pub mod fault_proxy;
pub mod images;
pub mod local;
pub mod machine;
pub mod moto;
pub mod netns;
pub mod poll;
pub mod process;
pub mod prometheus;
pub mod secrets;
pub mod stack;

pub use poll::{eventually, eventually_blocking, exited_within, holds, poll, poll_blocking};

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// The Python venv holding moto and ayeaye-fossa.
pub fn venv() -> PathBuf {
    std::env::var_os("FOSSA_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv"))
}

/// A program from the venv, or a failure saying how to get it.
pub fn venv_bin(name: &str) -> PathBuf {
    let p = venv().join("bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run tests/run.sh (it installs the test venv) or set FOSSA_TEST_VENV",
        p.display()
    );
    p
}

/// A workspace binary built next to the test executable (`cargo build --bins` first).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/deps");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the tests (tests/run.sh does)",
        p.display()
    );
    p
}

/// An HTTPS client for the agent's UI, which trusts its self-signed certificate.
pub fn agent_client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind loopback")
        .local_addr()
        .expect("addr")
        .port()
}

/// A fresh temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `/tmp/fossa-test-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "fossa-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a command to completion and returns its output, as text.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Runs `cmd`.
    pub fn of(mut cmd: impl std::borrow::BorrowMut<Command>) -> Run {
        let cmd = cmd.borrow_mut();
        let Output {
            status,
            stdout,
            stderr,
        } = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into(),
            stderr: String::from_utf8_lossy(&stderr).into(),
        }
    }

    /// Panics with both streams unless the exit code is 0.
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "command failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// A small filesystem (tmpfs) on `dir`, lazily unmounted on drop.
pub struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    /// Mounts it.
    pub fn mount(dir: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        crate::Run::of(
            std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "fossa-test"])
                .arg(dir),
        )
        .ok();
        SmallDisk(dir.to_owned())
    }

    /// Fills it with `filler` until no byte is left.
    pub fn fill(&self) -> std::path::PathBuf {
        let filler = self.0.join("filler");
        let _ = std::process::Command::new("dd")
            .args(["if=/dev/zero", "bs=1M"])
            .arg(format!("of={}", filler.display()))
            .stderr(std::process::Stdio::null())
            .status();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The task id of the last attempt a task's JSON (`GET /api/v1/tasks/<id>`)
/// lists, or `first` when the gateway never sent it again.
pub fn last_attempt(detail: &serde_json::Value, first: &str) -> String {
    detail["attempts"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(|a| a["task_id"].as_str())
        .unwrap_or(first)
        .to_owned()
}
