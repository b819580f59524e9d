//! Local mode's private RabbitMQ: its own data directory, free loopback
//! ports and epmd, a random user from a definitions file; and the duty that
//! supervises it: an AMQP login every few seconds, shown on the overview, and
//! a restart on the same address when the server died or stopped answering
//! (Fossa nodes reconnect to it on their own).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rand::distr::{Alphanumeric, SampleString};
use tokio::process::Command;
use tokio::sync::Mutex;

use super::setup;
use crate::duties::{Duty, DutyError, Next, Outcome};
use crate::host::amqp;
use crate::host::procs::{free_port, spawn_group, stop_group, Group};
use crate::Error;

/// How long a started server may take before an unanswered login counts as a hang.
const START_GRACE: Duration = Duration::from_secs(60);

/// A private RabbitMQ started by local mode.
pub struct LocalBroker {
    child: Group,
    epmd_port: u16,
    dist_port: u16,
    dir: PathBuf,
    node: String,
    password: String,
    started: Instant,
    /// `127.0.0.1:port`.
    pub address: String,
    url: String,
}

impl std::fmt::Debug for LocalBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBroker")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl LocalBroker {
    /// Starts rabbitmq-server on a free loopback port with a random user
    /// (created from a definitions file: no password on any command line), which
    /// may use the default vhost and nothing more: it is not an administrator.
    pub async fn start(dir: &Path) -> Result<Self, Error> {
        let io = |e| Error::io(format!("cannot prepare {}", dir.display()), e);
        let _ = std::fs::remove_dir_all(dir);
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(io)?;
        }
        let password = Alphanumeric.sample_string(&mut rand::rng(), 32);
        let defs = crate::duties::broker::definitions(&crate::duties::broker::Credentials {
            user: "fossa".into(),
            password: password.clone(),
        });
        let defs_path = dir.join("definitions.json");
        std::fs::write(&defs_path, defs.to_string()).map_err(io)?;
        let conf = dir.join("rabbitmq.conf");
        std::fs::write(
            &conf,
            format!("load_definitions = {}\n", defs_path.display()),
        )
        .map_err(io)?;
        std::fs::write(dir.join("enabled_plugins"), "[].\n").map_err(io)?;
        if nix::unistd::geteuid().is_root() {
            // The server runs as the rabbitmq user, which must reach its directory.
            use std::os::unix::fs::PermissionsExt;
            let abs = std::fs::canonicalize(dir).map_err(io)?;
            for parent in abs.ancestors().skip(1) {
                let mode = std::fs::metadata(parent).map_err(io)?.permissions().mode();
                if mode & 0o001 == 0 {
                    return Err(setup(format!(
                        "the rabbitmq user cannot enter {} (mode {:o}): run `chmod o+x {}` or choose another --state-dir",
                        parent.display(),
                        mode & 0o777,
                        parent.display()
                    )));
                }
            }
            // The server drops to the rabbitmq user, which must own its files.
            let ok = std::process::Command::new("chown")
                .args(["-R", "rabbitmq:rabbitmq"])
                .arg(dir)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(setup("cannot chown the broker's directory to the rabbitmq user: is rabbitmq-server installed?"));
            }
            let _ = std::fs::set_permissions(&defs_path, std::fs::Permissions::from_mode(0o600));
        }
        let port = free_port().map_err(io)?;
        let dist_port = free_port().map_err(io)?;
        let epmd_port = free_port().map_err(io)?;
        let address = format!("127.0.0.1:{port}");
        let mut broker = LocalBroker {
            child: spawn_server(dir, &address, dist_port, epmd_port, &node_name())?,
            epmd_port,
            dist_port,
            dir: dir.to_owned(),
            node: node_name(),
            url: format!("amqp://fossa:{password}@{address}/%2F"),
            password,
            started: Instant::now(),
            address,
        };
        broker.wait_listening().await?;
        Ok(broker)
    }

    /// Waits until the server listens, or fails with the end of its output.
    async fn wait_listening(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if tokio::net::TcpStream::connect(&self.address).await.is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.child.try_wait() {
                let out = std::fs::read_to_string(self.dir.join("server.out")).unwrap_or_default();
                let tail: Vec<&str> = out.lines().rev().take(5).collect();
                self.stop().await;
                return Err(setup(format!(
                    "rabbitmq-server exited ({status}): {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                )));
            }
            if Instant::now() > deadline {
                self.stop().await;
                return Err(setup(format!(
                    "rabbitmq-server did not listen on {} within 90 s; see {}",
                    self.address,
                    self.dir.join("log").display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops what is left of the server and starts it again on the same
    /// address, data and user, without waiting for it to listen.
    async fn restart(&mut self) -> Result<(), Error> {
        self.stop().await;
        self.child = spawn_server(
            &self.dir,
            &self.address,
            self.dist_port,
            self.epmd_port,
            &self.node,
        )?;
        self.started = Instant::now();
        Ok(())
    }

    /// The AMQP URL with the credentials (a secret: never log it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the server and the epmd it started.
    pub async fn stop(&mut self) {
        stop_group(&mut self.child, Duration::from_secs(15)).await;
        let _ = Command::new("epmd")
            .args(["-port", &self.epmd_port.to_string(), "-kill"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }
}

fn node_name() -> String {
    format!("fossa-{}@localhost", std::process::id())
}

/// Starts rabbitmq-server from the files in `dir`.
fn spawn_server(
    dir: &Path,
    address: &str,
    dist: u16,
    epmd_port: u16,
    node: &str,
) -> Result<Group, Error> {
    let io = |e| Error::io(format!("cannot prepare {}", dir.display()), e);
    let port = address.rsplit(':').next().unwrap_or_default();
    let conf = dir.join("rabbitmq.conf");
    let log = std::fs::File::create(dir.join("server.out")).map_err(io)?;
    // Run the server script itself (not Debian's wrapper, whose `su` would
    // take it out of our process group), as the rabbitmq user when root.
    let script = Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
    let mut cmd = Command::new(if script.exists() {
        script
    } else {
        Path::new("rabbitmq-server")
    });
    if nix::unistd::geteuid().is_root() {
        let user = nix::unistd::User::from_name("rabbitmq")
                .ok()
                .flatten()
                .ok_or_else(|| setup("there is no rabbitmq user: install the Debian package rabbitmq-server, or pass --broker-url"))?;
        cmd.uid(user.uid.as_raw())
            .gid(user.gid.as_raw())
            .env("HOME", &user.dir)
            .current_dir(&user.dir);
    }
    spawn_group(
            cmd
                .env("RABBITMQ_NODE_PORT", port)
                .env("RABBITMQ_DIST_PORT", dist.to_string())
                .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
                .env("RABBITMQ_NODENAME", node)
                .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
                .env("RABBITMQ_LOG_BASE", dir.join("log"))
                .env("RABBITMQ_CONFIG_FILE", &conf)
                .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
                .env("RABBITMQ_PID_FILE", dir.join("rabbit.pid"))
                .env(super::leftovers::STATE_ENV, super::leftovers::marker(dir.parent().unwrap_or(dir)))
                .env("ERL_EPMD_PORT", epmd_port.to_string())
                .env("ERL_EPMD_ADDRESS", "127.0.0.1")
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(io)?)
                .stderr(log),
        )
        .map_err(|e| Error::io("cannot start rabbitmq-server: install the Debian package rabbitmq-server, or pass --broker-url", e))
}

/// The local broker's duty: checks it with a real AMQP login, shows it down
/// at once, and restarts it when it died or hangs past its start grace.
pub struct BrokerDuty {
    broker: Arc<Mutex<LocalBroker>>,
    failing_since: Option<Instant>,
}

impl BrokerDuty {
    /// Supervises `broker`.
    pub fn new(broker: Arc<Mutex<LocalBroker>>) -> Self {
        BrokerDuty {
            broker,
            failing_since: None,
        }
    }
}

/// How long a running server may fail its logins before it is restarted.
const HANG_LIMIT: Duration = Duration::from_secs(20);

/// How often the local broker is checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

#[async_trait]
impl Duty<()> for BrokerDuty {
    async fn reconcile(&mut self, _: &()) -> Result<Outcome, DutyError> {
        let mut b = self.broker.lock().await;
        let login = amqp::Login {
            address: &b.address,
            user: "fossa",
            password: &b.password,
            vhost: "/",
        };
        let probe = amqp::check(&login, Duration::from_secs(3)).await;
        let address = b.address.clone();
        let why = match probe {
            Ok(()) => {
                self.failing_since = None;
                return Ok(Outcome::done(format!(
                    "RabbitMQ at {address} accepts an AMQP login"
                )));
            }
            Err(e) => crate::duties::driver::chain(&e),
        };
        let failing_for = self
            .failing_since
            .get_or_insert_with(Instant::now)
            .elapsed();
        let exited = b.child.child.try_wait().ok().flatten();
        let hung = b.started.elapsed() > START_GRACE && failing_for > HANG_LIMIT;
        let summary = if let Some(status) = exited {
            b.restart().await.map_err(|e| DutyError::Io {
                what: format!("cannot restart RabbitMQ at {address}"),
                source: std::io::Error::other(e.to_string()),
            })?;
            format!("RabbitMQ at {address} is down: it exited ({status}); restarted it")
        } else if hung {
            b.restart().await.map_err(|e| DutyError::Io {
                what: format!("cannot restart RabbitMQ at {address}"),
                source: std::io::Error::other(e.to_string()),
            })?;
            format!(
                "RabbitMQ at {address} is down: {why} for over {} s; restarted it",
                HANG_LIMIT.as_secs()
            )
        } else {
            format!("RabbitMQ at {address} is starting: {why}")
        };
        Ok(Outcome {
            next: Next::After(Duration::from_secs(1)),
            ..Outcome::done(summary).with_detail(false, "workers wait for it and reconnect")
        })
    }
}
