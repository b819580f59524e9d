//! A systemd "machine" for the tests: a container made from Debian packages
//! (`images::SYSTEMD`) booting systemd as PID 1, with its own network
//! namespace named for the test, an `eth0` whose peer is in a namespace of
//! the test's own (so nothing leaves the machine) and a default route out
//! of it, as an EC2 instance has.
//!
//! systemd-in-docker works here with `--cap-add SYS_ADMIN --cap-add NET_ADMIN
//! --tmpfs /run --tmpfs /run/lock -v /sys/fs/cgroup:/sys/fs/cgroup:rw`;
//! `--privileged` is refused on these machines.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::docker::Dockerd;
use crate::netns::Netns;
use crate::Run;

/// The container, removed on drop.
pub struct Machine<'a> {
    docker: &'a Dockerd,
    /// The container's name.
    pub name: String,
}

impl Machine<'_> {
    /// Runs a command inside.
    pub fn exec(&self, args: &[&str]) -> Run {
        Run::of(self.docker.cli().args(["exec", &self.name]).args(args))
    }

    /// Runs a shell script inside.
    pub fn sh(&self, script: &str) -> Run {
        self.exec(&["sh", "-c", script])
    }

    /// Copies a file in.
    pub fn copy_in(&self, from: &std::path::Path, to: &str) {
        Run::of(
            self.docker
                .cli()
                .arg("cp")
                .arg(from)
                .arg(format!("{}:{to}", self.name)),
        )
        .ok();
    }

    /// A property of fossa-agent.service.
    pub fn show(&self, prop: &str) -> String {
        self.exec(&["systemctl", "show", "-p", prop, "--value", "fossa-agent"])
            .stdout
            .trim()
            .to_owned()
    }

    /// fossa-agent's journal.
    pub fn journal(&self) -> String {
        self.exec(&["journalctl", "-u", "fossa-agent", "--no-pager", "-o", "cat"])
            .stdout
    }

    /// Waits until the journal holds `needle`; returns how long that took.
    pub fn wait_journal(&self, needle: &str, within: Duration) -> Duration {
        let t = Instant::now();
        crate::eventually_blocking(&format!("{needle:?} in the journal"), within, || {
            let j = self.journal();
            crate::holds(j.contains(needle), || j)
        });
        t.elapsed()
    }
}

impl Drop for Machine<'_> {
    fn drop(&mut self) {
        let _ = Run::of(self.docker.cli().args(["rm", "-f", &self.name]));
    }
}

impl Machine<'_> {
    /// Installs the freshly built agent, the shipped unit, `toml` as
    /// /etc/fossa/agent.toml and `dropin` as the unit's `test.conf` drop-in
    /// (what user-data installs, plus the test's environment), then reloads systemd.
    pub fn install_agent(&self, toml: &std::path::Path, dropin: &std::path::Path) {
        self.sh("mkdir -p /etc/fossa /etc/systemd/system/fossa-agent.service.d /usr/local/bin");
        self.copy_in(&crate::bin("fossa-agent"), "/usr/local/bin/fossa-agent");
        self.copy_in(
            &crate::repo_root().join("systemd/fossa-agent.service"),
            "/etc/systemd/system/fossa-agent.service",
        );
        self.copy_in(toml, "/etc/fossa/agent.toml");
        self.copy_in(
            dropin,
            "/etc/systemd/system/fossa-agent.service.d/test.conf",
        );
        self.exec(&["systemctl", "daemon-reload"]);
    }
}

/// A booted machine and its network.
pub struct Booted<'a> {
    /// The machine.
    pub machine: Machine<'a>,
    /// Its network namespace (192.0.2.2 on eth0).
    pub ns: Netns,
    /// The namespace at the other end of eth0 (192.0.2.1).
    pub outside: Netns,
}

impl<'a> Machine<'a> {
    /// Starts `image` on `docker` with extra `-v` mounts, gives it its
    /// network, and waits until systemd has booted.
    pub fn boot(docker: &'a Dockerd, image: &str, volumes: &[String]) -> Booted<'a> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let machine = Machine {
            docker,
            name: format!("fossa-sd-{}-{n}", std::process::id()),
        };
        let mut run = docker.cli();
        run.args(["run", "-d", "--name", &machine.name, "--network", "none"])
            .args(["--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN"])
            .args(["--tmpfs", "/run", "--tmpfs", "/run/lock"])
            .args(["-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw"]);
        for v in volumes {
            run.args(["-v", v]);
        }
        Run::of(run.args([image, "/sbin/init"])).ok();
        let pid: u32 =
            Run::of(
                docker
                    .cli()
                    .args(["inspect", "-f", "{{.State.Pid}}", &machine.name]),
            )
            .ok()
            .stdout
            .trim()
            .parse()
            .unwrap();
        let ns = Netns::attach(&format!("sd{n}"), pid);
        let outside = Netns::new(&format!("sd{n}-out"));
        Run::of(Command::new("ip").args([
            "link",
            "add",
            "eth0",
            "netns",
            &ns.name,
            "type",
            "veth",
            "peer",
            "name",
            "sdpeer",
            "netns",
            &outside.name,
        ]))
        .ok();
        Run::of(
            outside
                .cmd("ip")
                .args(["addr", "add", "192.0.2.1/24", "dev", "sdpeer"]),
        )
        .ok();
        Run::of(outside.cmd("ip").args(["link", "set", "sdpeer", "up"])).ok();
        for args in [
            vec!["addr", "add", "192.0.2.2/24", "dev", "eth0"],
            vec!["link", "set", "eth0", "up"],
            vec!["route", "add", "default", "via", "192.0.2.1"],
        ] {
            Run::of(ns.cmd("ip").args(&args)).ok();
        }
        crate::eventually_blocking("systemd booted", Duration::from_secs(90), || {
            let state = machine.exec(&["systemctl", "is-system-running"]).stdout;
            crate::holds(matches!(state.trim(), "running" | "degraded"), || state)
        });
        Booted {
            machine,
            ns,
            outside,
        }
    }
}
