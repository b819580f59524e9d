//! Processes an earlier `fossa-agent local` left running when it was killed
//! (SIGKILL, a crash, a power cut in a container): its workers and broker.
//! Every process local mode starts carries `FOSSA_LOCAL_STATE=<state dir>`
//! in its environment, so a new start finds exactly those and stops them
//! before it starts its own on the same state directory.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::{getpgid, Pid};

/// The environment variable that marks local mode's processes.
pub const STATE_ENV: &str = "FOSSA_LOCAL_STATE";

/// The marker's value for `state`: its absolute path.
pub fn marker(state: &Path) -> String {
    std::path::absolute(state)
        .unwrap_or_else(|_| state.to_owned())
        .display()
        .to_string()
}

/// Process groups whose processes carry the marker of `state`.
fn groups(state: &Path) -> Vec<i32> {
    let needle = format!("{STATE_ENV}={}", marker(state));
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
            if let Ok(pgid) = getpgid(Some(Pid::from_raw(pid))) {
                let g = pgid.as_raw();
                if g != me && g > 1 && !out.contains(&g) {
                    out.push(g);
                }
            }
        }
    }
    out
}

/// Stops what an earlier run on `state` left: SIGTERM, then SIGKILL after
/// 5 s. Returns how many process groups there were.
pub fn stop(state: &Path) -> usize {
    let found = groups(state);
    for g in &found {
        let _ = killpg(Pid::from_raw(*g), Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !found.is_empty() && Instant::now() < deadline {
        if found
            .iter()
            .all(|g| killpg(Pid::from_raw(*g), None).is_err())
        {
            return found.len();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for g in &found {
        let _ = killpg(Pid::from_raw(*g), Signal::SIGKILL);
    }
    found.len()
}

/// Holds `state` for this run: a second `fossa-agent local` on the same
/// state directory would take the first one's workers for leftovers and
/// stop them, so it is refused instead. The lock goes with the process
/// (a kill -9 too), so a later start never finds a stale one.
pub fn lock(state: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, crate::Error> {
    use nix::fcntl::{Flock, FlockArg};
    let path = state.join("agent.lock");
    std::fs::create_dir_all(state)
        .map_err(|e| crate::Error::io(format!("cannot create {}", state.display()), e))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| crate::Error::io(format!("cannot open {}", path.display()), e))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(held) => Ok(held),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(super::setup(format!(
            "another fossa-agent local runs on {}: stop it first (Ctrl-C), or give this one its own --state-dir",
            state.display()
        ))),
        Err((_, e)) => Err(crate::Error::io(
            format!("cannot lock {}", path.display()),
            e.into(),
        )),
    }
}
