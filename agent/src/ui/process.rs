//! Starting, watching and restarting the UI process, from the core.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use fossa_web::model::Fleet;
use fossa_web::privsep::{server, wire};
use tokio::sync::{watch, Mutex};

use super::confine::Account;
use crate::duties::{Duty, DutyError, Outcome};
use crate::events::Events;

/// The descriptor the UI process finds its socket on.
pub const SOCKET_FD: RawFd = 3;
/// The descriptor the UI process finds the session-state file on.
pub const SESSION_FD: RawFd = 4;
/// How long a new UI process has to listen.
const LISTEN_WAIT: Duration = Duration::from_secs(20);

/// What the UI process serves with.
#[derive(Clone)]
pub struct UiSpec {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The UI password at start (a rotation since is sent instead).
    pub password: String,
    /// Cookie key.
    pub cookie_key: Vec<u8>,
    /// PEM certificate and key.
    pub tls: (Vec<u8>, Vec<u8>),
    /// The scraper's token at start.
    pub scrape_token: Option<String>,
    /// The session-state file, opened by the core for the UI process.
    pub session_file: PathBuf,
}

/// Why the UI process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// Starting it, or the socket or file handed to it, failed.
    #[error("cannot start the web UI process: {what}")]
    Spawn {
        /// What failed.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Handing it its settings failed.
    #[error("cannot hand the web UI process its settings")]
    Hello(#[source] wire::WireError),
    /// It exited before it listened.
    #[error("the web UI process exited ({status}) before it listened on {listen}; its error line above says why (is the address in use?)")]
    Exited {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Where it should have listened.
        listen: SocketAddr,
    },
    /// It did not listen in time.
    #[error("the web UI process did not listen on {0} within 20 s")]
    NotListening(SocketAddr),
}

struct Running {
    child: tokio::process::Child,
    serving: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

/// The UI process, started and restarted by the core.
pub struct UiProcess {
    spec: UiSpec,
    fleet: Arc<dyn Fleet>,
    secrets: (watch::Receiver<String>, watch::Receiver<String>),
    account: Option<Account>,
    events: Events,
    running: Mutex<Option<Running>>,
}

impl UiProcess {
    /// Starts the UI process and waits until it listens.
    pub async fn start(
        spec: UiSpec,
        fleet: Arc<dyn Fleet>,
        secrets: (watch::Receiver<String>, watch::Receiver<String>),
        events: Events,
    ) -> Result<Arc<UiProcess>, UiError> {
        let ui = Arc::new(UiProcess {
            spec,
            fleet,
            secrets,
            account: Account::for_ui(),
            events,
            running: Mutex::new(None),
        });
        let r = ui.spawn().await?;
        *ui.running.lock().await = Some(r);
        Ok(ui)
    }

    /// The UI process's pid, while it runs.
    pub async fn pid(&self) -> Option<u32> {
        self.running
            .lock()
            .await
            .as_ref()
            .and_then(|r| r.child.id())
    }

    /// Starts it again if it has exited; says how it is.
    pub async fn ensure(&self) -> Result<String, UiError> {
        let mut running = self.running.lock().await;
        let exited = match running.as_mut() {
            Some(r) => match r.child.try_wait() {
                Ok(None) => None,
                Ok(Some(status)) => Some(status.to_string()),
                Err(e) => Some(e.to_string()),
            },
            None => Some("not started".to_owned()),
        };
        if let Some(why) = exited {
            *running = None;
            self.events.push(
                "web",
                true,
                format!("the web UI process ended ({why}); starting it again"),
            );
            *running = Some(self.spawn().await?);
        }
        let pid = running.as_ref().and_then(|r| r.child.id()).unwrap_or(0);
        let who = match self.account {
            Some(a) => format!("uid {}", a.uid),
            None => "this user".to_owned(),
        };
        Ok(format!(
            "on {} in process {pid} ({who}, no Docker socket, no iptables)",
            self.spec.listen
        ))
    }

    /// Stops it (when the agent stops).
    pub async fn stop(&self) {
        if let Some(mut r) = self.running.lock().await.take() {
            if let Some(pid) = r.child.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            if tokio::time::timeout(Duration::from_secs(3), r.child.wait())
                .await
                .is_err()
            {
                let _ = r.child.kill().await;
            }
        }
    }

    async fn spawn(&self) -> Result<Running, UiError> {
        let spawn = |what| move |source| UiError::Spawn { what, source };
        let (core_end, ui_end) = std::os::unix::net::UnixStream::pair().map_err(spawn("socket"))?;
        let session = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&self.spec.session_file)
                .map_err(spawn("the session-state file"))?
        };
        // The same binary as this one, even after an upgrade replaced the file.
        let mut cmd = tokio::process::Command::new("/proc/self/exe");
        cmd.arg("ui-serve");
        if let Some(a) = self.account {
            cmd.args(["--uid", &a.uid.to_string(), "--gid", &a.gid.to_string()]);
        }
        if self.spec.listen.port() < 1024 {
            cmd.arg("--bind-low");
        }
        cmd.env_clear();
        for k in ["RUST_LOG", "JOURNAL_STREAM", "LANG"] {
            if let Some(v) = std::env::var_os(k) {
                cmd.env(k, v);
            }
        }
        cmd.current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        hand_over(&mut cmd, [ui_end.as_raw_fd(), session.as_raw_fd()]);
        let mut child = cmd.spawn().map_err(spawn("fossa-agent ui-serve"))?;
        drop((ui_end, session));
        core_end.set_nonblocking(true).map_err(spawn("socket"))?;
        let sock = tokio::net::UnixStream::from_std(core_end).map_err(spawn("socket"))?;
        let (reader, mut writer) = sock.into_split();
        let now = |rx: &watch::Receiver<String>, start: Option<&String>| {
            Some(rx.borrow().clone())
                .filter(|v| !v.is_empty())
                .or_else(|| start.cloned())
        };
        let hello = wire::Hello {
            listen: self.spec.listen,
            password: now(&self.secrets.0, Some(&self.spec.password)).unwrap_or_default(),
            cookie_key: self.spec.cookie_key.clone(),
            tls: Some(self.spec.tls.clone()),
            scrape_token: now(&self.secrets.1, self.spec.scrape_token.as_ref()),
            session_file: true,
        };
        wire::write(
            &mut writer,
            &wire::Frame { id: 0, body: hello },
            wire::ANSWER_MAX_BYTES,
        )
        .await
        .map_err(UiError::Hello)?;
        let (fleet, secrets, events) = (
            self.fleet.clone(),
            self.secrets.clone(),
            self.events.clone(),
        );
        let serving = tokio::spawn(async move {
            if let Err(e) = server::serve(reader, writer, fleet, secrets).await {
                events.push(
                    "web",
                    true,
                    format!(
                        "stopped serving the web UI process: {}",
                        fossa_contract::aws::chain(&e)
                    ),
                );
            }
        });
        let listen = self.spec.listen;
        let probe = if listen.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], listen.port()))
        } else {
            listen
        };
        let deadline = tokio::time::Instant::now() + LISTEN_WAIT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                serving.abort();
                return Err(UiError::Exited { status, listen });
            }
            if tokio::net::TcpStream::connect(probe).await.is_ok() {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                serving.abort();
                let _ = child.kill().await;
                return Err(UiError::NotListening(listen));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Running { child, serving })
    }
}

/// Puts `fds` on [`SOCKET_FD`] and [`SESSION_FD`] in the child, without
/// close-on-exec; every other descriptor of the core is closed at exec.
#[allow(unsafe_code)]
fn hand_over(cmd: &mut tokio::process::Command, fds: [RawFd; 2]) {
    // SAFETY: the closure calls only fcntl and dup2, which are
    // async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // Out of the way first, so neither lands on the other's number.
            let mut high = [0; 2];
            for (h, fd) in high.iter_mut().zip(fds) {
                *h = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                if *h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (h, target) in high.into_iter().zip([SOCKET_FD, SESSION_FD]) {
                if libc::dup2(h, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Keeps the UI process running: starts it again when it has died.
pub struct UiDuty(pub Arc<UiProcess>);

/// How often the duty looks.
pub const PERIOD: Duration = Duration::from_secs(2);

#[async_trait::async_trait]
impl<C: Send + Sync + 'static> Duty<C> for UiDuty {
    async fn reconcile(&mut self, _: &C) -> Result<Outcome, DutyError> {
        Ok(Outcome::done(self.0.ensure().await?))
    }
}
