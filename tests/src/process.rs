//! A program the tests run (an agent, local or not), its stdout and stderr
//! in files: the one wrapper for starting, reading, signalling and stopping
//! one. `stack::Agent`, `local::LocalAgent` and the NAT test's service are
//! this with their own start-up.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running child process whose output goes to files; killed on drop if it
/// still runs.
#[derive(Debug)]
pub struct Process {
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Process {
    /// Spawns `cmd` with stdin closed and stdout and stderr to these files
    /// (made anew).
    pub fn spawn(cmd: &mut Command, stdout: PathBuf, stderr: PathBuf) -> Process {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Process {
            child: Some(child),
            stdout,
            stderr,
        }
    }

    /// Its pid (`ip netns exec` execs the program, so it is the program's).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Whether it has not been waited for yet.
    pub fn started(&self) -> bool {
        self.child.is_some()
    }

    /// What it printed on stdout.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// What it logged on stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// How long the log is now, to wait for what comes after it.
    pub fn log_len(&self) -> usize {
        self.log().len()
    }

    /// Waits until the log past byte `since` holds every needle; how long that took.
    pub fn wait_log_since(&self, since: usize, needles: &[&str], within: Duration) -> Duration {
        let t = Instant::now();
        let what = format!("the log saying {needles:?} after byte {since}");
        crate::eventually_blocking(&what, within, || {
            let log = self.log();
            let new = log.get(since..).unwrap_or_default();
            crate::holds(needles.iter().all(|n| new.contains(n)), || new.to_owned())
        });
        t.elapsed()
    }

    /// Waits for `needle` on stdout.
    pub fn wait_output(&self, needle: &str, within: Duration) {
        crate::eventually_blocking(&format!("{needle:?} on stdout"), within, || {
            crate::holds(self.output().contains(needle), || {
                format!("stdout:\n{}\nstderr:\n{}", self.output(), self.log())
            })
        });
    }

    /// Sends a signal (`TERM`, `INT`, `HUP`, …).
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "kill -{name} {}", self.pid());
    }

    /// Waits for it to exit and gives its exit code (-1 for a signal); kills
    /// it and fails the test with its log if it runs on past `within`.
    pub fn wait_exit(&mut self, within: Duration) -> i32 {
        let mut child = self.child.take().expect("running");
        match crate::exited_within(&mut child, within) {
            Some(status) => status.code().unwrap_or(-1),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("it did not exit within {within:?}:\n{}", self.log());
            }
        }
    }

    /// Sends `signal`, then [`Process::wait_exit`].
    pub fn stop(&mut self, signal: &str, within: Duration) -> i32 {
        self.signal(signal);
        self.wait_exit(within)
    }

    /// SIGKILL, as a crash: what it started is left running.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
