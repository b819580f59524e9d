//! Images made from Debian packages with mmdebstrap, since nothing can be
//! pulled from Docker Hub here. Each root file system is built once per
//! content (suite, variant, packages, hooks) and kept as a tarball in the
//! image cache (`$FOSSA_IMAGE_CACHE`, default `/var/cache/fossa-tests/images`),
//! so a warm run only imports it.

use std::path::PathBuf;
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::docker::Dockerd;
use crate::Run;

/// One image: its name and what it is made of.
#[derive(Debug, Clone, Copy)]
pub struct DebianImage {
    /// Short name; the tag is `fossa-test-<name>:<content hash>`.
    pub name: &'static str,
    /// Debian packages on top of the `apt` variant.
    pub packages: &'static [&'static str],
    /// mmdebstrap `--customize-hook` commands (`$1` is the root).
    pub hooks: &'static [&'static str],
    /// `docker import --change` lines.
    pub changes: &'static [&'static str],
    /// Whether the image trusts the certificate authorities this machine
    /// added (`/usr/local/share/ca-certificates`), as a company's base image
    /// would: here a TLS-inspecting egress proxy stands between pip and PyPI.
    pub host_cas: bool,
    /// Hooks run after the CA certificates are in (those that reach the network).
    pub late_hooks: &'static [&'static str],
    /// A pip requirements file (with hashes) installed, after the late
    /// hooks, with the agent's own locked options.
    pub pip_lock: Option<&'static str>,
}

/// Where Debian keeps the certificate authorities a machine adds.
const LOCAL_CAS: &str = "/usr/local/share/ca-certificates";

/// The machine's added authorities, sorted by name.
fn local_cas() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(LOCAL_CAS)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "crt"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap_or_default(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The Debian suite every image is made from (the machines' own).
pub const SUITE: &str = "bookworm";

/// systemd as PID 1 with what the agent's unit needs, as on the gateway's
/// AMI: iptables for NAT, procps for `ExecReload=/bin/kill`, CA certificates
/// for TLS to AWS, iproute2 to wire it into a test network.
pub const SYSTEMD: DebianImage = DebianImage {
    name: "systemd",
    packages: &[
        "systemd",
        "systemd-sysv",
        "dbus",
        "iptables",
        "procps",
        "iproute2",
        "ca-certificates",
    ],
    hooks: &[
        // No consoles to serve in a container; they only slow the boot.
        "chroot \"$1\" systemctl mask getty@tty1.service serial-getty@.service console-getty.service systemd-logind.service",
    ],
    changes: &["CMD [\"/sbin/init\"]"],
    host_cas: false,
    late_hooks: &[],
    pip_lock: None,
};

/// RabbitMQ from Debian's package, started as the broker duty starts the
/// official image: `rabbitmq-server` reading `RABBITMQ_NODE_IP_ADDRESS`,
/// `RABBITMQ_NODE_PORT` and the files the duty copies in.
pub const RABBITMQ: DebianImage = DebianImage {
    name: "rabbitmq",
    packages: &["rabbitmq-server"],
    hooks: &[],
    changes: &["CMD [\"/usr/sbin/rabbitmq-server\"]"],
    host_cas: false,
    late_hooks: &[],
    pip_lock: None,
};

/// A Python base for the worker image, as the official `python` image is
/// used: `python` and `pip` on the PATH, and pip free to install system-wide
/// (Debian marks its Python externally managed; the image is the environment).
pub const PYTHON: DebianImage = DebianImage {
    name: "python",
    packages: &["python3", "python3-pip", "python3-venv", "ca-certificates"],
    hooks: &[
        "rm -f \"$1\"/usr/lib/python3*/EXTERNALLY-MANAGED",
        "ln -sf /usr/bin/python3 \"$1\"/usr/local/bin/python",
        "ln -sf /usr/bin/pip3 \"$1\"/usr/local/bin/pip",
    ],
    changes: &["CMD [\"python\"]"],
    host_cas: true,
    late_hooks: &[],
    pip_lock: None,
};

/// [`PYTHON`] with the agent's locked Fossa closure already installed, for
/// a gateway namespace whose builds cannot reach PyPI: the image duty's real
/// `pip install --require-hashes` of the same lock then finds it satisfied.
/// Its pip ran here, in the chroot, on the host's network, checking every
/// hash.
pub const PYTHON_FOSSA: DebianImage = DebianImage {
    name: "python-fossa",
    pip_lock: Some(fossa_agent::fossa::REQUIREMENTS_LOCK),
    ..PYTHON
};

fn cache_dir() -> PathBuf {
    std::env::var_os("FOSSA_IMAGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/fossa-tests/images"))
}

impl DebianImage {
    /// The content hash the cache and the tag are keyed by.
    pub fn key(&self) -> String {
        let mut h = Sha256::new();
        h.update(format!("v1|{SUITE}|apt|"));
        let mut p = self.packages.to_vec();
        p.sort_unstable();
        h.update(p.join(","));
        for x in self.hooks.iter().chain(self.changes).chain(self.late_hooks) {
            h.update("|");
            h.update(x);
        }
        if let Some(lock) = self.pip_lock {
            h.update("|pip:");
            h.update(lock);
        }
        if self.host_cas {
            for (name, pem) in local_cas() {
                h.update(format!("|ca:{name}:"));
                h.update(pem);
            }
        }
        hex::encode(h.finalize())[..16].to_owned()
    }

    /// The image's tag.
    pub fn tag(&self) -> String {
        format!("fossa-test-{}:{}", self.name, self.key())
    }

    /// The root file system tarball, built unless the cache holds it.
    pub fn tarball(&self) -> PathBuf {
        let dir = cache_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join(format!("{}-{}.tar", self.name, self.key()));
        if out.is_file() {
            return out;
        }
        // mmdebstrap picks its output format from the name: keep `.tar`.
        let partial = dir.join(format!(
            "{}-{}.partial-{}.tar",
            self.name,
            self.key(),
            std::process::id()
        ));
        let mut cmd = Command::new("mmdebstrap");
        cmd.args(["--variant=apt", "--quiet"])
            .arg(format!("--include={}", self.packages.join(",")));
        for hook in self.hooks {
            cmd.arg(format!("--customize-hook={hook}"));
        }
        if self.host_cas && !local_cas().is_empty() {
            cmd.arg(format!(
                "--customize-hook=cp {LOCAL_CAS}/*.crt \"$1\"{LOCAL_CAS}/ && chroot \"$1\" update-ca-certificates"
            ));
        }
        for hook in self.late_hooks {
            cmd.arg(format!("--customize-hook={hook}"));
        }
        let lock_file = dir.join(format!("{}-{}.pip-lock.txt", self.name, self.key()));
        if let Some(lock) = self.pip_lock {
            std::fs::write(&lock_file, lock).unwrap();
            cmd.arg(format!(
                "--customize-hook=cp {} \"$1\"/tmp/lock.txt && chroot \"$1\" pip3 install --no-cache-dir {} -r /tmp/lock.txt && rm \"$1\"/tmp/lock.txt",
                lock_file.display(),
                fossa_agent::fossa::PIP_LOCKED.join(" ")
            ));
        }
        cmd.arg(SUITE).arg(&partial);
        let r = Run::of(&mut cmd);
        assert_eq!(
            r.code, 0,
            "mmdebstrap for the {} image (Debian package mmdebstrap, and Debian's mirror) failed:\n{}{}",
            self.name, r.stdout, r.stderr
        );
        let _ = std::fs::remove_file(&lock_file);
        std::fs::rename(&partial, &out).unwrap();
        out
    }

    /// Imports the image into `docker` (building it first if need be); returns its tag.
    pub fn import(&self, docker: &Dockerd) -> String {
        let tag = self.tag();
        let tarball = self.tarball();
        let mut cmd = docker.cli();
        cmd.arg("import");
        for c in self.changes {
            cmd.args(["--change", c]);
        }
        cmd.arg(&tarball).arg(&tag);
        let r = Run::of(&mut cmd);
        assert_eq!(r.code, 0, "docker import {tag}: {}", r.stderr);
        tag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_follows_the_content() {
        let mut other = SYSTEMD;
        other.packages = &["systemd"];
        assert_ne!(SYSTEMD.key(), other.key());
        assert_eq!(SYSTEMD.key(), SYSTEMD.key());
        assert!(SYSTEMD.tag().starts_with("fossa-test-systemd:"));
        assert_ne!(PYTHON.key(), PYTHON_FOSSA.key());
    }

    #[test]
    fn the_preinstalled_fossa_is_the_agents_lock() {
        assert_eq!(
            PYTHON_FOSSA.pip_lock,
            Some(fossa_agent::fossa::REQUIREMENTS_LOCK)
        );
    }
}
