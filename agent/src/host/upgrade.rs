//! The agent's own binaries on the host, for upgrading in place. The unit
//! always starts the installed binary (`/usr/local/bin/fossa-agent`, never
//! written, read-only under the sandbox); it is the launcher. Upgrades live
//! in `<state_dir>/bin`:
//!
//! - `fossa-agent-<sha256>`: each binary, checked (SHA-256, ELF, architecture,
//!   `--version`) and written whole before anything names it;
//! - `current` and `previous`: symlinks, each replaced by an atomic rename;
//! - `pending`: `<sha> <starts>` while a new binary has not yet become ready;
//! - `rolled-back`: `<sha> <reason>` after a new binary was given up on.
//!
//! At start the launcher counts the start in `pending`; after
//! [`MAX_STARTS`] starts that never became ready it points `current` back at
//! `previous`. Then it execs `current` when that is not itself (same PID, so
//! systemd's notify socket and watchdog carry over). The new agent clears
//! `pending` once it is ready. So whatever happens, systemd starts either the
//! old or the new agent, and the known-good launcher decides which.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fossa_contract::elf::{self, Arch};
use sha2::{Digest, Sha256};

/// Starts a new binary gets to become ready before it is given up on.
pub const MAX_STARTS: u32 = 2;

/// Why a binary was refused or an upgrade step failed.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The downloaded bytes are not the ones `agent-sha256` names.
    #[error("its SHA-256 is {found}, but agent-sha256 says {wanted}: re-run `fossa-bootstrap launch` to upload the binary again")]
    ShaMismatch {
        /// What the download hashes to.
        found: String,
        /// What SSM names.
        wanted: String,
    },
    /// Not an ELF for this machine.
    #[error("it is not an agent for this instance")]
    Elf(#[from] elf::ElfError),
    /// The architecture of this agent is not one we build.
    #[error("this agent's architecture ({0}) is not x86_64 or aarch64")]
    UnknownArch(&'static str),
    /// An older agent than the running one, not allowed by the stack config.
    #[error("it is fossa-agent {offered}, older than the running {running}: an agent never downgrades itself; to go back on purpose, run the older fossa-bootstrap's `launch --allow-downgrade`")]
    Downgrade {
        /// The running agent's version.
        running: String,
        /// The offered binary's version.
        offered: String,
    },
    /// `--version` did not answer as an agent does.
    #[error("it does not run as fossa-agent: `--version` {0}")]
    DoesNotRun(String),
    /// A file in the state directory could not be written or read.
    #[error("cannot update {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> UpgradeError + '_ {
    move |source| UpgradeError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Checks downloaded `bytes` against the wanted SHA-256 and this machine.
pub fn verify(bytes: &[u8], wanted: &str) -> Result<(), UpgradeError> {
    let found = hex::encode(Sha256::digest(bytes));
    if !found.eq_ignore_ascii_case(wanted) {
        return Err(UpgradeError::ShaMismatch {
            found,
            wanted: wanted.to_owned(),
        });
    }
    let arch = Arch::this().ok_or(UpgradeError::UnknownArch(std::env::consts::ARCH))?;
    elf::check(bytes, arch)?;
    Ok(())
}

/// Runs `path --version` (10 s at most): it must exit 0 saying `fossa-agent …`.
pub async fn runs(path: &Path) -> Result<String, UpgradeError> {
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new(path)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| UpgradeError::DoesNotRun("did not exit within 10 s".into()))?
    .map_err(|e| UpgradeError::DoesNotRun(format!("could not start: {e}")))?;
    let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || !said.starts_with("fossa-agent ") {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(UpgradeError::DoesNotRun(format!(
            "exited with {} and said {:?}",
            out.status,
            if said.is_empty() { err.trim() } else { &said }
        )));
    }
    Ok(said)
}

/// `major.minor.patch` of a version string (`0.1.0`, `0.1.0-dev`).
fn triple(v: &str) -> Option<(u64, u64, u64)> {
    let mut parts = v.split(['.', '-', '+']);
    Some((
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    ))
}

/// Refuses an agent older than `running` (its `--version` said `said`:
/// `fossa-agent 0.1.0`) unless `allowed`. An unreadable version is refused
/// as a downgrade would be: nothing says it is not one.
pub fn not_older(running: &str, said: &str, allowed: bool) -> Result<(), UpgradeError> {
    let offered = said
        .strip_prefix("fossa-agent ")
        .unwrap_or(said)
        .split_whitespace()
        .next()
        .unwrap_or_default();
    let older = match (triple(offered), triple(running)) {
        (Some(o), Some(r)) => o < r,
        _ => true,
    };
    if older && !allowed {
        return Err(UpgradeError::Downgrade {
            running: running.to_owned(),
            offered: offered.to_owned(),
        });
    }
    Ok(())
}

/// What the launcher does at start.
#[derive(Debug, PartialEq, Eq)]
pub enum Start {
    /// Run this process.
    Run,
    /// Exec this binary instead.
    Exec(PathBuf),
}

/// The binaries in `<state_dir>/bin`.
#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// The layout under `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        Layout {
            dir: state_dir.join("bin"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Where the binary with `sha` is kept.
    pub fn binary(&self, sha: &str) -> PathBuf {
        self.path(&format!("fossa-agent-{sha}"))
    }

    /// Writes `bytes` as the binary for `sha` (whole, synced, executable,
    /// then renamed into place) and returns its path.
    pub fn stage(&self, sha: &str, bytes: &[u8]) -> Result<PathBuf, UpgradeError> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let path = self.binary(sha);
        let partial = path.with_extension("partial");
        let mut f = std::fs::File::create(&partial).map_err(io(&partial))?;
        f.write_all(bytes).map_err(io(&partial))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o755))
            .map_err(io(&partial))?;
        f.sync_all().map_err(io(&partial))?;
        std::fs::rename(&partial, &path).map_err(io(&path))?;
        Ok(path)
    }

    /// Points symlink `name` at `target` atomically.
    fn point(&self, name: &str, target: &Path) -> Result<(), UpgradeError> {
        let link = self.path(name);
        let tmp = self.path(&format!(".{name}.new"));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(target, &tmp).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &link).map_err(io(&link))
    }

    /// What `current` names, if anything.
    pub fn current(&self) -> Option<PathBuf> {
        std::fs::read_link(self.path("current")).ok()
    }

    /// Makes `staged` (the binary for `sha`) current: `previous` names what
    /// runs now (`running`), `pending` counts its starts from 0. Only those
    /// two binaries stay on the disk ([`Layout::prune`]).
    pub fn swap(&self, sha: &str, staged: &Path, running: &Path) -> Result<(), UpgradeError> {
        let old = self.current().unwrap_or_else(|| running.to_owned());
        self.point("previous", &old)?;
        self.write("pending", &format!("{sha} 0"))?;
        let _ = std::fs::remove_file(self.path("rolled-back"));
        self.point("current", staged)?;
        self.prune();
        Ok(())
    }

    /// Removes the staged binaries that are neither `current` nor
    /// `previous`, and what a stage cut short left: the gateway's disk keeps
    /// two agents, not every one it ever ran. Best effort: a file that
    /// cannot go stays for the next upgrade.
    pub fn prune(&self) {
        let keep: Vec<PathBuf> = ["current", "previous"]
            .iter()
            .filter_map(|l| self.path(l).canonicalize().ok())
            .collect();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if !name.starts_with("fossa-agent-") || path.is_symlink() {
                continue;
            }
            let kept = path.canonicalize().is_ok_and(|p| keep.contains(&p));
            if !kept {
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    fn write(&self, name: &str, text: &str) -> Result<(), UpgradeError> {
        let path = self.path(name);
        let tmp = self.path(&format!(".{name}.new"));
        std::fs::write(&tmp, text).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// The binary that was given up on, and why.
    pub fn rolled_back(&self) -> Option<(String, String)> {
        let text = std::fs::read_to_string(self.path("rolled-back")).ok()?;
        let (sha, why) = text.trim().split_once(' ')?;
        Some((sha.to_owned(), why.to_owned()))
    }

    /// The launcher's decision at start, for the process running `me`:
    /// counts a start of a pending binary, rolls back after [`MAX_STARTS`],
    /// and says whether to exec `current`.
    pub fn on_start(&self, me: &Path) -> Result<Start, UpgradeError> {
        let Some(current) = self.current() else {
            return Ok(Start::Run);
        };
        let same = |a: &Path, b: &Path| {
            a.canonicalize()
                .ok()
                .is_some_and(|a| Some(a) == b.canonicalize().ok())
        };
        if same(&current, me) {
            // Exec'd by the launcher (or current is the launcher itself): nothing to count.
            return Ok(Start::Run);
        }
        if let Ok(text) = std::fs::read_to_string(self.path("pending")) {
            let mut parts = text.split_whitespace();
            let sha = parts.next().unwrap_or_default().to_owned();
            let starts: u32 = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            if starts >= MAX_STARTS {
                let previous =
                    std::fs::read_link(self.path("previous")).unwrap_or_else(|_| me.to_owned());
                self.point("current", &previous)?;
                self.write(
                    "rolled-back",
                    &format!("{sha} it did not become ready in {MAX_STARTS} starts; the previous agent runs again"),
                )?;
                let _ = std::fs::remove_file(self.path("pending"));
                return Ok(if same(&previous, me) {
                    Start::Run
                } else {
                    Start::Exec(previous)
                });
            }
            self.write("pending", &format!("{sha} {}", starts + 1))?;
        }
        Ok(Start::Exec(current))
    }

    /// The running agent became ready: a pending upgrade is done.
    pub fn commit(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.path("pending")).ok()?;
        std::fs::remove_file(self.path("pending")).ok()?;
        text.split_whitespace().next().map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_agent_is_refused_unless_allowed() {
        assert!(
            not_older("0.2.0", "fossa-agent 0.2.0", false).is_ok(),
            "the same version (a rebuild)"
        );
        assert!(not_older("0.2.0", "fossa-agent 0.10.1", false).is_ok());
        let e = not_older("0.2.0", "fossa-agent 0.1.9", false).unwrap_err();
        assert!(
            e.to_string().contains("older than the running 0.2.0")
                && e.to_string().contains("--allow-downgrade"),
            "{e}"
        );
        assert!(not_older("0.2.0", "fossa-agent 0.1.9", true).is_ok());
        assert!(not_older("0.2.0", "fossa-agent banana", false).is_err());
    }

    fn exe(dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, name).unwrap();
        p
    }

    #[test]
    fn a_new_binary_is_execd_until_it_fails_to_become_ready_twice() {
        let scratch = tempdir();
        let tmp = &scratch.0;
        let launcher = exe(tmp, "launcher");
        let l = Layout::new(&tmp.join("state"));
        assert_eq!(l.on_start(&launcher).unwrap(), Start::Run, "no upgrade yet");
        let new = l.stage("bbbb", b"new agent").unwrap();
        l.swap("bbbb", &new, &launcher).unwrap();
        // Start 1 and 2 exec the new binary; it never commits.
        assert_eq!(l.on_start(&launcher).unwrap(), Start::Exec(new.clone()));
        assert_eq!(
            l.on_start(&new).unwrap(),
            Start::Run,
            "the exec'd binary counts nothing"
        );
        assert_eq!(l.on_start(&launcher).unwrap(), Start::Exec(new.clone()));
        // Start 3: given up on, back to the launcher.
        assert_eq!(l.on_start(&launcher).unwrap(), Start::Run);
        assert_eq!(l.current().unwrap(), launcher);
        let (sha, why) = l.rolled_back().unwrap();
        assert_eq!(sha, "bbbb");
        assert!(why.contains("did not become ready"), "{why}");
    }

    #[test]
    fn a_ready_binary_commits_and_the_next_upgrade_keeps_it_as_previous() {
        let scratch = tempdir();
        let tmp = &scratch.0;
        let launcher = exe(tmp, "launcher");
        let l = Layout::new(&tmp.join("state"));
        let b = l.stage("bbbb", b"b").unwrap();
        l.swap("bbbb", &b, &launcher).unwrap();
        assert_eq!(l.on_start(&launcher).unwrap(), Start::Exec(b.clone()));
        assert_eq!(l.commit().as_deref(), Some("bbbb"));
        // Committed: every later start execs it, nothing counted.
        for _ in 0..3 {
            assert_eq!(l.on_start(&launcher).unwrap(), Start::Exec(b.clone()));
        }
        let c = l.stage("cccc", b"c").unwrap();
        l.swap("cccc", &c, &b).unwrap();
        assert_eq!(l.on_start(&launcher).unwrap(), Start::Exec(c.clone()));
        assert_eq!(l.on_start(&launcher).unwrap(), Start::Exec(c));
        // c never becomes ready: back to b, not to the launcher.
        assert_eq!(l.on_start(&launcher).unwrap(), Start::Exec(b.clone()));
        assert_eq!(l.current().unwrap(), b);
    }

    #[test]
    fn only_the_current_and_previous_binaries_stay() {
        let scratch = tempdir();
        let tmp = &scratch.0;
        let launcher = exe(tmp, "launcher");
        let l = Layout::new(&tmp.join("state"));
        let b = l.stage("bbbb", b"b").unwrap();
        l.swap("bbbb", &b, &launcher).unwrap();
        let c = l.stage("cccc", b"c").unwrap();
        l.swap("cccc", &c, &b).unwrap();
        // A stage cut short, and an upgrade staged but never swapped in.
        std::fs::write(l.binary("eeee").with_extension("partial"), b"e").unwrap();
        let _ = l.stage("ffff", b"f").unwrap();
        let d = l.stage("dddd", b"d").unwrap();
        l.swap("dddd", &d, &c).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(tmp.join("state/bin"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("fossa-agent-"))
            .collect();
        left.sort();
        assert_eq!(left, ["fossa-agent-cccc", "fossa-agent-dddd"]);
        assert!(
            launcher.exists(),
            "the launcher is not the layout's to remove"
        );
    }

    #[test]
    fn refused_binaries_name_the_reason() {
        let me = std::fs::read("/proc/self/exe").unwrap();
        let sha = hex::encode(Sha256::digest(&me));
        verify(&me, &sha).unwrap();
        assert!(matches!(
            verify(&me, &"0".repeat(64)),
            Err(UpgradeError::ShaMismatch { .. })
        ));
        let text = b"#!/bin/sh\necho fossa-agent 9\n";
        let err = verify(text, &hex::encode(Sha256::digest(text))).unwrap_err();
        assert!(
            matches!(err, UpgradeError::Elf(elf::ElfError::NotElf)),
            "{err}"
        );
        let mut other = me.clone();
        other[18] = if Arch::this() == Some(Arch::X86_64) {
            0xb7
        } else {
            0x3e
        };
        let err = verify(&other, &hex::encode(Sha256::digest(&other))).unwrap_err();
        assert!(
            matches!(err, UpgradeError::Elf(elf::ElfError::WrongArch { .. })),
            "{err}"
        );
    }

    fn tempdir() -> crate::testkit::ScratchDir {
        crate::testkit::ScratchDir::new("upgrade-test")
    }
}
