//! `fossa-agent local` as a child process, and an HTTPS client for its API.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{bin, free_port, venv_bin, TempDir};

/// A running `fossa-agent local`; stopped with SIGINT on drop.
#[derive(Debug)]
pub struct LocalAgent {
    child: Option<Child>,
    /// Its state directory (venv is the test venv; broker data, logs, TLS here).
    pub state: TempDir,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The UI password.
    pub password: String,
    /// The UI port.
    pub port: u16,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl LocalAgent {
    /// Starts it with `workers` and extra arguments; waits until every worker answers.
    pub fn start(workers: u32, extra: &[&str]) -> LocalAgent {
        Self::start_with(workers, extra, &[])
    }

    /// [`LocalAgent::start`] with extra environment (say, `DOCKER_HOST`).
    pub fn start_with(workers: u32, extra: &[&str], env: &[(&str, &str)]) -> LocalAgent {
        let state = TempDir::new("local");
        let port = free_port();
        let password = format!("local-test-pw-{}-{}", std::process::id(), port);
        let stdout = state.0.join("agent.out");
        let stderr = state.0.join("agent.err");
        let mut agent = LocalAgent {
            child: None,
            state,
            url: format!("https://127.0.0.1:{port}"),
            password,
            port,
            stdout,
            stderr,
        };
        agent.spawn(workers, extra, env);
        agent.wait_output(
            &format!("all {workers} workers ready"),
            Duration::from_secs(180),
        );
        agent
    }

    /// Starts the agent process on this state directory, port and password
    /// (its output replaces the last run's); does not wait. `workers` 0
    /// leaves `--workers` out (an autoscaled start at its minimum).
    pub fn spawn(&mut self, workers: u32, extra: &[&str], env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "the agent still runs");
        let count = workers.to_string();
        let workers_args: &[&str] = if workers == 0 {
            &[]
        } else {
            &["--workers", &count]
        };
        let child = Command::new(bin("fossa-agent"))
            .arg("local")
            .args(workers_args)
            .args(["--listen", &format!("127.0.0.1:{}", self.port), "--python"])
            .arg(venv_bin("python"))
            .arg("--state-dir")
            .arg(self.state.0.join("state"))
            .args(extra)
            .env("GATEWAY_HTTP_PASSWORD", &self.password)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&self.stdout).unwrap())
            .stderr(std::fs::File::create(&self.stderr).unwrap())
            .spawn()
            .expect("start fossa-agent local");
        self.child = Some(child);
    }

    /// Kills the agent with SIGKILL (its workers and broker are left running,
    /// as after a crash) and returns once it is gone.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Waits for the agent process to exit by itself (a fault point) and
    /// returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> i32 {
        let mut child = self.child.take().expect("running");
        match crate::exited_within(&mut child, within) {
            Some(status) => status.code().unwrap_or(-1),
            None => {
                let _ = child.kill();
                panic!("the agent did not exit within {within:?}\n{}", self.log());
            }
        }
    }

    /// What it printed on stdout.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// What it logged on stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for `needle` on stdout; panics with both streams on time-out or exit.
    pub fn wait_output(&self, needle: &str, within: Duration) {
        crate::eventually_blocking(&format!("{needle:?} on stdout"), within, || {
            crate::holds(self.output().contains(needle), || {
                format!("stdout:\n{}\nstderr:\n{}", self.output(), self.log())
            })
        });
    }

    /// Sends SIGINT (Ctrl-C) and waits for the exit code.
    pub fn interrupt(&mut self) -> i32 {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        match crate::exited_within(&mut child, Duration::from_secs(60)) {
            Some(status) => status.code().unwrap_or(-1),
            None => {
                let _ = child.kill();
                panic!(
                    "fossa-agent local did not stop within 60 s of SIGINT:\n{}",
                    self.log()
                );
            }
        }
    }
}

impl Drop for LocalAgent {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.interrupt();
        }
    }
}

/// JSON over HTTPS with basic auth, for the agent's API.
pub async fn api(
    agent: &LocalAgent,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let client = crate::agent_client();
    let url = format!("{}{path}", agent.url);
    let mut req = match method {
        "POST" => client.post(&url),
        "DELETE" => client.delete(&url),
        _ => client.get(&url),
    }
    .basic_auth("fossa", Some(&agent.password));
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A page's HTML, with basic auth.
pub async fn page(agent: &LocalAgent, path: &str) -> (u16, String) {
    let client = crate::agent_client();
    let resp = client
        .get(format!("{}{path}", agent.url))
        .basic_auth("fossa", Some(&agent.password))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// The pid of the process listening on TCP `port` on this machine.
pub fn listening_pid(port: u16) -> Option<u32> {
    let out =
        crate::Run::of(Command::new("ss").args(["-ltnpH", &format!("sport = :{port}")])).stdout;
    let at = out.find("pid=")?;
    out[at + 4..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// SIGKILL to every process of the group `pid` is in: a worker's node and
/// its gunicorn processes at once, as the OOM killer or a crash would.
pub fn kill_group_of(pid: u32) {
    let pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid as i32)))
        .expect("the process has a group");
    assert!(
        pgid.as_raw() > 1 && pgid != nix::unistd::getpgrp(),
        "refusing to kill group {pgid} of pid {pid}"
    );
    nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL).expect("killpg");
}
