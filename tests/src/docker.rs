//! A private Docker engine (Debian docker.io) and a registry with htpasswd
//! auth (Debian docker-registry) on loopback, plus base images imported from
//! a busybox rootfs, since nothing can be pulled here.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, Run, TempDir};

/// A dockerd with its own socket, data and exec roots; no bridge and no
/// iptables changes, so it leaves the host's network alone. Killed on drop.
#[derive(Debug)]
pub struct Dockerd {
    child: Child,
    /// `unix:///…/docker.sock`, for DOCKER_HOST.
    pub host: String,
    /// Its directory.
    pub dir: TempDir,
    exec_root: String,
}

impl Dockerd {
    /// Starts it and waits until `docker info` answers.
    pub fn start() -> Dockerd {
        Self::start_in(None)
    }

    /// Starts it inside `netns` (its containers' host network, and its
    /// builds' and pulls' network, are that namespace's); its socket is a
    /// file, reachable from anywhere.
    pub fn start_in(netns: Option<&crate::netns::Netns>) -> Dockerd {
        Self::start_with(netns, TempDir::new("dockerd"))
    }

    /// As [`Dockerd::start_in`], with its socket, data and log in `dir` (a
    /// directory a container can mount before the daemon starts).
    pub fn start_with(netns: Option<&crate::netns::Netns>, dir: TempDir) -> Dockerd {
        // dockerd's exec-root must be a short path (unix socket length limits).
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let exec_root = format!("/run/fossa-d-{}-{n}", std::process::id());
        let sock = dir.0.join("docker.sock");
        let host = format!("unix://{}", sock.display());
        let log = std::fs::File::create(dir.0.join("dockerd.log")).unwrap();
        let child = match netns {
            Some(ns) => ns.enter("dockerd"),
            None => Command::new("dockerd"),
        }
        .arg("--host")
        .arg(&host)
        .arg("--data-root")
        .arg(dir.0.join("data"))
        .args([
            "--exec-root",
            &exec_root,
            "--bridge",
            "none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
        ])
        .arg("--pidfile")
        .arg(dir.0.join("docker.pid"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("dockerd is installed (Debian docker.io)");
        let d = Dockerd {
            child,
            host,
            dir,
            exec_root,
        };
        crate::eventually_blocking("dockerd answering", Duration::from_secs(60), || {
            let up = Command::new("docker")
                .args(["-H", &d.host, "info"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            crate::holds(up, || {
                std::fs::read_to_string(d.dir.0.join("dockerd.log")).unwrap_or_default()
            })
        });
        d
    }

    /// A bollard client of this engine (API version negotiated).
    pub async fn client(&self) -> bollard::Docker {
        bollard::Docker::connect_with_unix(
            self.host.trim_start_matches("unix://"),
            60,
            bollard::API_DEFAULT_VERSION,
        )
        .unwrap()
        .negotiate_version()
        .await
        .unwrap()
    }

    /// A `docker -H <this engine>` command.
    pub fn cli(&self) -> Command {
        let mut c = Command::new("docker");
        c.args(["-H", &self.host]);
        c
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker -H {} ps -aq | xargs -r docker -H {} rm -f",
                self.host, self.host
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        crate::exited_within(&mut self.child, Duration::from_secs(15));
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("umount")
            .arg("-R")
            .arg(self.dir.0.join("data"))
            .stderr(Stdio::null())
            .status();
        // dockerd bind-mounts its network namespace under its exec root
        // (`netns/default`) and leaves it mounted when it ends.
        let _ = Command::new("umount")
            .arg(format!("{}/netns/default", self.exec_root))
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.exec_root);
    }
}

/// A registry on loopback requiring user `AWS` with `password`, as ECR does.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub address: String,
    netns: Option<String>,
    _forward: Option<crate::netns::Forward>,
    _dir: TempDir,
}

impl Registry {
    /// Starts docker-registry with htpasswd auth.
    pub fn start(password: &str) -> Registry {
        Self::start_in(password, None)
    }

    /// Starts it on the loopback of `netns` (the test reaches it through a
    /// [`crate::netns::Forward`] on the same port).
    pub fn start_in(password: &str, netns: Option<&crate::netns::Netns>) -> Registry {
        let dir = TempDir::new("registry");
        let port = free_port();
        let mut htpasswd = Command::new("htpasswd")
            .args(["-niB", "AWS"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("htpasswd (apache2-utils)");
        htpasswd
            .stdin
            .take()
            .unwrap()
            .write_all(password.as_bytes())
            .unwrap();
        let out = htpasswd.wait_with_output().unwrap();
        std::fs::write(dir.0.join("htpasswd"), &out.stdout).unwrap();
        let config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: fossa-test\n    path: {pw}\n",
            root = dir.0.join("data").display(),
            pw = dir.0.join("htpasswd").display()
        );
        std::fs::write(dir.0.join("config.yml"), config).unwrap();
        let address = format!("127.0.0.1:{port}");
        let forward = netns.map(|ns| crate::netns::Forward::into_ns(ns, port));
        let netns = netns.map(|ns| ns.name.clone());
        let child = serve(netns.as_deref(), &dir);
        let r = Registry {
            child,
            address,
            netns,
            _forward: forward,
            _dir: dir,
        };
        r.wait_up();
        r
    }

    fn wait_up(&self) {
        let url = format!("http://{}/", self.address);
        crate::eventually_blocking("docker-registry answering", Duration::from_secs(20), || {
            let r = Run::of(Command::new("curl").args(["-sS", "-o", "/dev/null", &url]));
            crate::holds(r.code == 0, || r.stderr.clone())
        });
    }

    /// Stops it (the registry is down) until [`Registry::restart`].
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same address, with the same images.
    pub fn restart(&mut self) {
        self.stop();
        self.child = serve(self.netns.as_deref(), &self._dir);
        self.wait_up();
    }

    /// Tags of `repo`, asked with `password`.
    pub fn tags(&self, repo: &str, password: &str) -> Vec<String> {
        let r = Run::of(Command::new("curl").args([
            "-fsS",
            "-u",
            &format!("AWS:{password}"),
            &format!("http://{}/v2/{repo}/tags/list", self.address),
        ]));
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_default();
        let mut tags: Vec<String> = v["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        tags.sort();
        tags
    }
}

/// Runs `docker-registry serve` with the config in `dir`, inside `netns` if given.
fn serve(netns: Option<&str>, dir: &TempDir) -> Child {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "docker-registry"]);
            c
        }
        None => Command::new("docker-registry"),
    };
    cmd.arg("serve")
        .arg(dir.0.join("config.yml"))
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.0.join("registry.log"))
                .unwrap(),
        )
        .spawn()
        .expect("docker-registry is installed")
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
