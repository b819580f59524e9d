//! Host commands behind one small trait: the real host runs programs and
//! touches `/proc/sys`; the fake records every call and keeps an in-memory
//! model of iptables and sysctls, so duties can be unit-tested without root.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a program printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CmdOutput {
    /// Exit code (-1 when killed by a signal).
    pub status: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CmdOutput {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// A host call failed to run at all.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The program could not be started.
    #[error("cannot run {program}: is it installed?")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program did not end within its time; it was killed.
    #[error("{program} {args} did not end within {limit:?} and was killed (the host is stuck on it; it is tried again)")]
    TimedOut {
        /// The program.
        program: String,
        /// Its arguments.
        args: String,
        /// Its time limit.
        limit: Duration,
    },
    /// A file could not be read or written.
    #[error("cannot access {path}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Runs host programs and reads and writes host files.
pub trait Executor: Send + Sync {
    /// Runs `program` with `args` and waits for it.
    fn run(&self, program: &str, args: &[&str]) -> Result<CmdOutput, ExecError>;
    /// Reads a file (e.g. `/proc/net/route`).
    fn read(&self, path: &Path) -> Result<String, ExecError>;
    /// Writes a file (e.g. a sysctl under `/proc/sys`).
    fn write(&self, path: &Path, contents: &str) -> Result<(), ExecError>;
}

/// The real host.
#[derive(Debug, Default, Clone, Copy)]
pub struct Host;

impl Executor for Host {
    fn run(&self, program: &str, args: &[&str]) -> Result<CmdOutput, ExecError> {
        run_within(
            program,
            args,
            Duration::from_secs(fossa_contract::limits::HOST_COMMAND_SECS),
        )
    }

    fn read(&self, path: &Path) -> Result<String, ExecError> {
        std::fs::read_to_string(path).map_err(|source| ExecError::File {
            path: path.to_owned(),
            source,
        })
    }

    fn write(&self, path: &Path, contents: &str) -> Result<(), ExecError> {
        std::fs::write(path, contents).map_err(|source| ExecError::File {
            path: path.to_owned(),
            source,
        })
    }
}

/// Runs `program` and waits at most `limit` for it to end; past it, kills
/// it and says so. Its output is read on two threads, so a program that
/// writes much never blocks on a full pipe.
pub fn run_within(program: &str, args: &[&str], limit: Duration) -> Result<CmdOutput, ExecError> {
    tracing::debug!(program, ?args, "exec");
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ExecError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    }
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(2);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ExecError::TimedOut {
                    program: program.to_owned(),
                    args: args.join(" "),
                    limit,
                });
            }
        }
    };
    Ok(CmdOutput {
        status: status.code().unwrap_or(-1),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// A fake host: records calls, models `iptables` rule lists per table and
/// chain, and keeps files in memory.
#[derive(Debug, Default)]
pub struct Fake {
    state: Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    calls: Vec<String>,
    files: BTreeMap<PathBuf, String>,
    /// table -> chain -> rules (each rule's args joined by spaces).
    tables: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

const BUILTIN: [(&str, &[&str]); 3] = [
    ("filter", &["INPUT", "FORWARD", "OUTPUT"]),
    ("nat", &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"]),
    (
        "mangle",
        &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
    ),
];

impl Fake {
    /// A host with the built-in chains, `ip_forward=0` and a default route via `eth0`.
    pub fn new() -> Self {
        let f = Fake::default();
        {
            let mut s = f.state.lock().expect("lock");
            for (t, chains) in BUILTIN {
                let table = s.tables.entry(t.to_owned()).or_default();
                for c in chains {
                    table.insert((*c).to_owned(), Vec::new());
                }
            }
            s.files
                .insert("/proc/sys/net/ipv4/ip_forward".into(), "0\n".into());
            s.files.insert(
                "/proc/net/route".into(),
                "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
                 eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                 eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
                    .into(),
            );
        }
        f
    }

    /// Every call so far, as `program arg arg…` or `write path=value`.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().expect("lock").calls.clone()
    }

    /// The rules of `table`/`chain`.
    pub fn rules(&self, table: &str, chain: &str) -> Vec<String> {
        let s = self.state.lock().expect("lock");
        s.tables
            .get(table)
            .and_then(|t| t.get(chain))
            .cloned()
            .unwrap_or_default()
    }

    /// Whether `chain` exists in `table`.
    pub fn has_chain(&self, table: &str, chain: &str) -> bool {
        let s = self.state.lock().expect("lock");
        s.tables.get(table).is_some_and(|t| t.contains_key(chain))
    }

    /// Adds a chain, as Docker would add DOCKER-USER.
    pub fn add_chain(&self, table: &str, chain: &str) {
        let mut s = self.state.lock().expect("lock");
        s.tables
            .entry(table.to_owned())
            .or_default()
            .insert(chain.to_owned(), Vec::new());
    }

    /// Deletes one rule behind the agent's back.
    pub fn drop_rule(&self, table: &str, chain: &str, index: usize) {
        let mut s = self.state.lock().expect("lock");
        if let Some(rules) = s.tables.get_mut(table).and_then(|t| t.get_mut(chain)) {
            rules.remove(index);
        }
    }

    /// A snapshot of every table, to compare before and after.
    pub fn snapshot(&self) -> String {
        format!("{:?}", self.state.lock().expect("lock").tables)
    }

    /// Contents of a fake file.
    pub fn file(&self, path: &str) -> Option<String> {
        self.state
            .lock()
            .expect("lock")
            .files
            .get(Path::new(path))
            .cloned()
    }

    fn iptables(s: &mut FakeState, args: &[&str]) -> CmdOutput {
        let mut args: Vec<&str> = args.to_vec();
        if args.first() == Some(&"-w") {
            args.drain(..2);
        }
        let mut table = "filter".to_owned();
        if let Some(i) = args.iter().position(|a| *a == "-t") {
            table = args.get(i + 1).copied().unwrap_or("filter").to_owned();
            args.drain(i..=i + 1);
        }
        let fail = |msg: &str| CmdOutput {
            status: 1,
            stdout: String::new(),
            stderr: msg.to_owned(),
        };
        let ok = |out: String| CmdOutput {
            status: 0,
            stdout: out,
            stderr: String::new(),
        };
        let (Some(op), Some(chain)) = (args.first().copied(), args.get(1).copied()) else {
            return fail("bad iptables call");
        };
        let rest: Vec<&str> = args[2..].to_vec();
        let t = s.tables.entry(table).or_default();
        match op {
            "-N" if t.contains_key(chain) => fail("Chain already exists."),
            "-N" => {
                t.insert(chain.to_owned(), Vec::new());
                ok(String::new())
            }
            _ if !t.contains_key(chain) => fail("No chain/target/match by that name."),
            "-S" => ok(t[chain]
                .iter()
                .map(|r| format!("-A {chain} {r}\n"))
                .collect()),
            "-L" => ok(String::new()),
            "-F" => {
                t.get_mut(chain).expect("exists").clear();
                ok(String::new())
            }
            "-X" if !t[chain].is_empty() => fail("Directory not empty."),
            "-X" if t
                .values()
                .any(|rules| rules.iter().any(|r| r.ends_with(&format!("-j {chain}")))) =>
            {
                fail("Too many links.")
            }
            "-X" => {
                t.remove(chain);
                ok(String::new())
            }
            "-C" => {
                let r = rest.join(" ");
                if t[chain].contains(&r) {
                    ok(String::new())
                } else {
                    fail("Bad rule (does a matching rule exist in that chain?).")
                }
            }
            "-A" => {
                t.get_mut(chain).expect("exists").push(rest.join(" "));
                ok(String::new())
            }
            "-I" => {
                let (pos, r) = match rest.first().and_then(|p| p.parse::<usize>().ok()) {
                    Some(p) => (p.saturating_sub(1), rest[1..].join(" ")),
                    None => (0, rest.join(" ")),
                };
                let rules = t.get_mut(chain).expect("exists");
                rules.insert(pos.min(rules.len()), r);
                ok(String::new())
            }
            "-D" => {
                let r = rest.join(" ");
                let rules = t.get_mut(chain).expect("exists");
                match rules.iter().position(|x| *x == r) {
                    Some(i) => {
                        rules.remove(i);
                        ok(String::new())
                    }
                    None => fail("Bad rule (does a matching rule exist in that chain?)."),
                }
            }
            _ => fail("unsupported by the fake"),
        }
    }
}

impl Executor for Fake {
    fn run(&self, program: &str, args: &[&str]) -> Result<CmdOutput, ExecError> {
        let mut s = self.state.lock().expect("lock");
        s.calls.push(
            std::iter::once(program)
                .chain(args.iter().copied())
                .collect::<Vec<_>>()
                .join(" "),
        );
        match program {
            "iptables" => Ok(Fake::iptables(&mut s, args)),
            _ => Ok(CmdOutput::default()),
        }
    }

    fn read(&self, path: &Path) -> Result<String, ExecError> {
        let s = self.state.lock().expect("lock");
        s.files.get(path).cloned().ok_or_else(|| ExecError::File {
            path: path.to_owned(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
    }

    fn write(&self, path: &Path, contents: &str) -> Result<(), ExecError> {
        let mut s = self.state.lock().expect("lock");
        s.calls
            .push(format!("write {}={}", path.display(), contents.trim()));
        s.files.insert(path.to_owned(), contents.to_owned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_past_its_limit_is_killed_and_named() {
        let started = Instant::now();
        let e = run_within("sleep", &["30"], Duration::from_millis(300)).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let line = e.to_string();
        assert!(
            line.contains("sleep 30 did not end within 300ms and was killed"),
            "{line}"
        );
        assert!(matches!(e, ExecError::TimedOut { .. }));
    }

    #[test]
    fn a_command_within_its_limit_gives_its_output_and_status() {
        let out = run_within(
            "sh",
            &[
                "-c",
                "head -c 200000 /dev/zero | tr '\\0' x; echo no >&2; exit 3",
            ],
            Duration::from_secs(20),
        )
        .unwrap();
        assert_eq!(out.status, 3);
        assert_eq!(out.stdout.len(), 200_000, "a full pipe never blocks it");
        assert_eq!(out.stderr, "no\n");
    }
}
