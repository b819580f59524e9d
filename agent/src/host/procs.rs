//! Child process groups: started in a group of their own so that stopping one
//! ends every process it spawned (gunicorn workers, broker managers, the
//! Erlang VM), with SIGTERM first and SIGKILL after a grace period.

use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// A child leading its own process group. The group id is kept apart from
/// the `Child`, which forgets its pid once it has been reaped, while the
/// processes it spawned may still be running.
#[derive(Debug)]
pub struct Group {
    /// The leader.
    pub child: Child,
    /// The group id (the leader's pid).
    pub pgid: u32,
}

/// Starts `cmd` as the leader of a new process group.
pub fn spawn_group(cmd: &mut Command) -> std::io::Result<Group> {
    let child = cmd.process_group(0).kill_on_drop(false).spawn()?;
    let pgid = child
        .id()
        .ok_or_else(|| std::io::Error::other("the child exited at once"))?;
    Ok(Group { child, pgid })
}

/// Signals the whole group led by `pid`; a group that is already gone is fine.
pub fn signal_group(pid: u32, signal: Signal) {
    let _ = killpg(Pid::from_raw(pid as i32), signal);
}

/// Whether any process of the group led by `pid` is still alive.
pub fn group_alive(pid: u32) -> bool {
    killpg(Pid::from_raw(pid as i32), None).is_ok()
}

/// SIGTERM to the group, then SIGKILL to whatever is left after `grace`.
pub async fn stop_group(group: &mut Group, grace: Duration) {
    let (child, pid) = (&mut group.child, group.pgid);
    signal_group(pid, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        let _ = child.try_wait();
        if !group_alive(pid) {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            signal_group(pid, Signal::SIGKILL);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
    // Children of the leader that outlived it are still in the group.
    for _ in 0..40 {
        if !group_alive(pid) {
            break;
        }
        signal_group(pid, Signal::SIGKILL);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
