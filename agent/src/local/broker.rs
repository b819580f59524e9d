//! Local mode's private RabbitMQ: its own data directory, free loopback
//! ports and epmd, a random user from a definitions file.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rand::distr::{Alphanumeric, SampleString};
use tokio::process::Command;

use super::other;
use crate::host::procs::{free_port, spawn_group, stop_group, Group};
use crate::Error;

/// A private RabbitMQ started by local mode.
pub struct LocalBroker {
    child: Group,
    epmd_port: u16,
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
        let io = |e: std::io::Error| other(format!("cannot prepare {}: {e}", dir.display()));
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
                    return Err(other(format!(
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
                return Err(other("cannot chown the broker's directory to the rabbitmq user: is rabbitmq-server installed?"));
            }
            let _ = std::fs::set_permissions(&defs_path, std::fs::Permissions::from_mode(0o600));
        }
        let port = free_port().map_err(io)?;
        let dist = free_port().map_err(io)?;
        let epmd_port = free_port().map_err(io)?;
        let node = format!("fossa-{}@localhost", std::process::id());
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
                .ok_or_else(|| other("there is no rabbitmq user: install the Debian package rabbitmq-server, or pass --broker-url"))?;
            cmd.uid(user.uid.as_raw())
                .gid(user.gid.as_raw())
                .env("HOME", &user.dir)
                .current_dir(&user.dir);
        }
        let child = spawn_group(
            cmd
                .env("RABBITMQ_NODE_PORT", port.to_string())
                .env("RABBITMQ_DIST_PORT", dist.to_string())
                .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
                .env("RABBITMQ_NODENAME", &node)
                .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
                .env("RABBITMQ_LOG_BASE", dir.join("log"))
                .env("RABBITMQ_CONFIG_FILE", &conf)
                .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
                .env("RABBITMQ_PID_FILE", dir.join("rabbit.pid"))
                .env("ERL_EPMD_PORT", epmd_port.to_string())
                .env("ERL_EPMD_ADDRESS", "127.0.0.1")
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(io)?)
                .stderr(log),
        )
        .map_err(|e| other(format!("cannot start rabbitmq-server ({e}): install the Debian package rabbitmq-server, or pass --broker-url")))?;
        let address = format!("127.0.0.1:{port}");
        let mut broker = LocalBroker {
            child,
            epmd_port,
            url: format!("amqp://fossa:{password}@{address}/%2F"),
            address,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if tokio::net::TcpStream::connect(&broker.address)
                .await
                .is_ok()
            {
                break;
            }
            if let Ok(Some(status)) = broker.child.child.try_wait() {
                let out = std::fs::read_to_string(dir.join("server.out")).unwrap_or_default();
                let tail: Vec<&str> = out.lines().rev().take(5).collect();
                broker.stop().await;
                return Err(other(format!(
                    "rabbitmq-server exited ({status}): {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                )));
            }
            if Instant::now() > deadline {
                broker.stop().await;
                return Err(other(format!(
                    "rabbitmq-server did not listen on {} within 90 s; see {}",
                    broker.address,
                    dir.join("log").display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(broker)
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

// ---------- workers ----------
