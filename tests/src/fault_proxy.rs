//! `tests/support/fault_proxy.py` in front of an HTTP service (moto, a
//! registry): every Nth request answered with a fault, or requests to some
//! paths never answered.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{eventually_blocking, free_port, repo_root, venv_bin};

/// A running fault proxy, killed on drop.
pub struct FaultProxy {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// `127.0.0.1:PORT`.
    pub address: String,
}

impl FaultProxy {
    /// Every `every`-th request to `upstream` (a URL or `host:port` ending
    /// in the port) gets a fault of `kinds`, in turn.
    pub fn start(upstream: &str, every: u32, kinds: &str) -> FaultProxy {
        Self::spawn(upstream, &["--every", &every.to_string(), "--kinds", kinds])
    }

    /// Requests whose path matches the regular expression `path` are read
    /// and never answered; the others reach `upstream`.
    pub fn hanging(upstream: &str, path: &str) -> FaultProxy {
        Self::spawn(
            upstream,
            &["--every", "1", "--kinds", "hang", "--only-path", path],
        )
    }

    fn spawn(upstream: &str, args: &[&str]) -> FaultProxy {
        let port = free_port();
        let upstream = upstream.rsplit(':').next().unwrap().trim_end_matches('/');
        let child = Command::new(venv_bin("python"))
            .arg(repo_root().join("tests/support/fault_proxy.py"))
            .args(["--listen", &port.to_string(), "--upstream", upstream])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        eventually_blocking("the fault proxy answering", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port))
        });
        FaultProxy {
            child,
            url: format!("http://127.0.0.1:{port}"),
            address: format!("127.0.0.1:{port}"),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
