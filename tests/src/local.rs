//! `fossa-agent local` as a child process, and an HTTPS client for its API.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::process::Process;
use crate::{bin, free_port, venv_bin, TempDir};

/// A running `fossa-agent local`; stopped with SIGINT on drop. Its
/// [`Process`] (stdout, stderr, signals, exit) is the last one started.
#[derive(Debug)]
pub struct LocalAgent {
    process: Option<Process>,
    /// Its state directory (venv is the test venv; broker data, logs, TLS here).
    pub state: TempDir,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The UI password.
    pub password: String,
    /// The UI port.
    pub port: u16,
}

impl std::ops::Deref for LocalAgent {
    type Target = Process;
    fn deref(&self) -> &Process {
        self.process.as_ref().expect("started")
    }
}

impl std::ops::DerefMut for LocalAgent {
    fn deref_mut(&mut self) -> &mut Process {
        self.process.as_mut().expect("started")
    }
}

impl LocalAgent {
    /// Starts it with `workers` and extra arguments; waits until every worker answers.
    pub fn start(workers: u32, extra: &[&str]) -> LocalAgent {
        Self::start_with(workers, extra, &[])
    }

    /// [`LocalAgent::start`] with extra environment (say, `DOCKER_HOST`).
    pub fn start_with(workers: u32, extra: &[&str], env: &[(&str, &str)]) -> LocalAgent {
        let mut agent = Self::prepared();
        agent.spawn(workers, extra, env);
        agent.wait_output(
            &format!("all {workers} workers ready"),
            Duration::from_secs(180),
        );
        agent
    }

    /// Its scratch directory, port and password, not started: a test may
    /// prepare `state/` (mount a small filesystem there), then
    /// [`LocalAgent::spawn`] it.
    pub fn prepared() -> LocalAgent {
        let state = TempDir::new("local");
        let port = free_port();
        let password = format!("local-test-pw-{}-{}", std::process::id(), port);
        LocalAgent {
            process: None,
            state,
            url: format!("https://127.0.0.1:{port}"),
            password,
            port,
        }
    }

    /// Starts the agent process on this state directory, port and password
    /// (its output replaces the last run's); does not wait. `workers` 0
    /// leaves `--workers` out (an autoscaled start at its minimum).
    pub fn spawn(&mut self, workers: u32, extra: &[&str], env: &[(&str, &str)]) {
        assert!(
            !self.process.as_ref().is_some_and(Process::started),
            "the agent still runs"
        );
        let count = workers.to_string();
        let workers_args: &[&str] = if workers == 0 {
            &[]
        } else {
            &["--workers", &count]
        };
        let mut cmd = Command::new(bin("fossa-agent"));
        cmd.arg("local")
            .args(workers_args)
            .args(["--listen", &format!("127.0.0.1:{}", self.port), "--python"])
            .arg(venv_bin("python"))
            .arg("--state-dir")
            .arg(self.state.0.join("state"))
            .args(extra)
            .env("GATEWAY_HTTP_PASSWORD", &self.password)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied());
        let out = self.state.0.join("agent.out");
        let err = self.state.0.join("agent.err");
        self.process = Some(Process::spawn(&mut cmd, out, err));
    }

    /// Sends SIGINT (Ctrl-C) and waits up to 60 s for the exit code.
    pub fn interrupt(&mut self) -> i32 {
        self.stop("INT", Duration::from_secs(60))
    }
}

impl Drop for LocalAgent {
    fn drop(&mut self) {
        if self.process.as_ref().is_some_and(Process::started) {
            self.interrupt();
        }
    }
}

/// The port a worker of the API listens on (its `address`, `ip:port`).
pub fn port_of(worker: &Value) -> u16 {
    let address = worker["address"].as_str().expect("the worker's address");
    address.rsplit(':').next().unwrap().parse().expect("a port")
}

/// The workers the agent's API lists.
pub async fn workers(agent: &LocalAgent) -> Vec<Value> {
    let (_, ws) = api(agent, "GET", "/api/v1/workers", None).await;
    ws["workers"].as_array().cloned().unwrap_or_default()
}

/// The local broker's AMQP port, from the overview's Broker line
/// (`… at 127.0.0.1:PORT …`).
pub fn broker_port(overview: &Value) -> u16 {
    let detail = overview["broker"]["detail"].as_str().unwrap_or_default();
    detail
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the broker line names its address: {detail}"))
}

/// Submits `body` through the API, which must send it at once (201): the answer.
pub async fn submit(agent: &LocalAgent, body: &Value) -> Value {
    let (status, v) = api(agent, "POST", "/api/v1/tasks", Some(body)).await;
    assert_eq!(status, 201, "{v}");
    v
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

/// The leader of the process group `pid` is in: a local worker's node (the
/// gunicorn master) for any of its processes, which all listen on its port.
pub fn group_leader_of(pid: u32) -> u32 {
    let pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid as i32)))
        .expect("the process has a group");
    assert!(
        pgid.as_raw() > 1 && pgid != nix::unistd::getpgrp(),
        "pid {pid} is in the test's own group"
    );
    pgid.as_raw() as u32
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
