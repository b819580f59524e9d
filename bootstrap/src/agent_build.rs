//! `launch` without `--agent-binary`, run inside the fossa-gateway source
//! tree: builds the static agent for the instance's architecture itself
//! (`cargo build --release -p fossa-agent --target <arch>-unknown-linux-musl`),
//! adding the Rust target when it is missing. What is missing for that (cargo,
//! rustup, the musl C compiler that aws-lc and ring need) is named with how
//! to get it. The plan (which target, which compiler, which command) is
//! plain data, unit-tested; [`build`] runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::plan::Arch;

/// Chooses the cargo profile of the build (default `release`, what is
/// deployed; the tests use `dev`, which builds in a fraction of the time).
pub const PROFILE_ENV: &str = "FOSSA_AGENT_PROFILE";

/// Why the agent could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A tool is not on the PATH.
    #[error("building the agent needs `{tool}`, which is not on the PATH: {hint}; or pass --agent-binary PATH to a static build of fossa-agent")]
    Missing {
        /// The program.
        tool: String,
        /// How to get it.
        hint: String,
    },
    /// A step ran and failed.
    #[error("`{command}` failed ({status}):\n{output}")]
    Failed {
        /// What ran.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of what it printed.
        output: String,
    },
    /// A step could not be started.
    #[error("cannot run `{command}`")]
    Spawn {
        /// What.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How the agent is built for one instance architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildPlan {
    /// The workspace root.
    pub workspace: PathBuf,
    /// Cargo's target directory (`CARGO_TARGET_DIR`, else the workspace's `target`).
    pub target_dir: PathBuf,
    /// The Rust target triple.
    pub target: &'static str,
    /// The cargo profile.
    pub profile: String,
    /// The C compiler cc-rs uses for the target (aws-lc and ring build C).
    pub c_compiler: &'static str,
    /// How to get that compiler.
    pub c_compiler_hint: &'static str,
}

impl BuildPlan {
    /// The plan for `arch`, built on a host of `host_arch` (`std::env::consts::ARCH`),
    /// into `target_dir` (cargo's `CARGO_TARGET_DIR`) if given.
    pub fn new(
        workspace: PathBuf,
        target_dir: Option<PathBuf>,
        arch: Arch,
        host_arch: &str,
        profile: &str,
    ) -> Self {
        let (target, native) = match arch {
            Arch::X86_64 => ("x86_64-unknown-linux-musl", host_arch == "x86_64"),
            Arch::Arm64 => ("aarch64-unknown-linux-musl", host_arch == "aarch64"),
        };
        let (c_compiler, c_compiler_hint) = match (arch, native) {
            (_, true) => (
                "musl-gcc",
                "install musl-tools (Debian and Ubuntu: sudo apt-get install musl-tools)",
            ),
            (Arch::X86_64, false) => (
                "x86_64-linux-musl-gcc",
                "install cargo-zigbuild and zig (`cargo install cargo-zigbuild` and `pip install ziglang`, or zig from ziglang.org), or a cross compiler for x86_64 musl (musl.cc's x86_64-linux-musl-cross) on the PATH",
            ),
            (Arch::Arm64, false) => (
                "aarch64-linux-musl-gcc",
                "install cargo-zigbuild and zig (`cargo install cargo-zigbuild` and `pip install ziglang`, or zig from ziglang.org), or a cross compiler for aarch64 musl (musl.cc's aarch64-linux-musl-cross) on the PATH, or build on an arm64 machine",
            ),
        };
        BuildPlan {
            target_dir: target_dir.unwrap_or_else(|| workspace.join("target")),
            workspace,
            target,
            profile: profile.to_owned(),
            c_compiler,
            c_compiler_hint,
        }
    }

    /// The arguments of the cargo build: `cargo build`, or with `zig`,
    /// `cargo zigbuild` (cargo-zigbuild links and compiles C with zig, a
    /// cross compiler for every target).
    pub fn cargo_args(&self, zig: bool) -> Vec<String> {
        [
            if zig { "zigbuild" } else { "build" },
            "--locked",
            "--profile",
            &self.profile,
            "-p",
            "fossa-agent",
            "--target",
            self.target,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Where the built agent lands.
    pub fn output(&self) -> PathBuf {
        let dir = if self.profile == "dev" {
            "debug"
        } else {
            &self.profile
        };
        self.target_dir
            .join(self.target)
            .join(dir)
            .join("fossa-agent")
    }

    /// Whether this is a cross build (the instance's architecture is not this machine's).
    pub fn cross(&self) -> bool {
        self.c_compiler != "musl-gcc"
    }

    /// The environment that points cargo's linker and cc-rs at the C compiler
    /// when it is a cross compiler.
    pub fn env(&self) -> Vec<(String, String)> {
        if self.c_compiler == "musl-gcc" {
            return Vec::new();
        }
        let triple = self.target.replace('-', "_");
        vec![
            (
                format!("CARGO_TARGET_{}_LINKER", triple.to_uppercase()),
                self.c_compiler.to_owned(),
            ),
            (format!("CC_{triple}"), self.c_compiler.to_owned()),
        ]
    }
}

/// The fossa-gateway workspace holding `start`, if any: the nearest
/// directory up from it with a `Cargo.toml` and `agent/Cargo.toml` naming
/// the package `fossa-agent`.
pub fn find_workspace(start: &Path) -> Option<PathBuf> {
    start.ancestors().find_map(|dir| {
        let agent = std::fs::read_to_string(dir.join("agent/Cargo.toml")).ok()?;
        (dir.join("Cargo.toml").is_file() && agent.contains("name = \"fossa-agent\""))
            .then(|| dir.to_path_buf())
    })
}

fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            d.join(program)
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// zig on the PATH, or the `ziglang` Python package (which cargo-zigbuild also finds).
fn has_zig() -> bool {
    on_path("zig")
        || Command::new("python3")
            .args(["-m", "ziglang", "version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

fn run(cmd: &mut Command, shown: &str) -> Result<(), BuildError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BuildError::Spawn {
            command: shown.to_owned(),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    Err(BuildError::Failed {
        command: shown.to_owned(),
        status: out.status,
        output: lines[lines.len().saturating_sub(30)..].join("\n"),
    })
}

/// An exclusive lock on this user's rustup home (or the temp dir), held
/// while the toolchain is checked and a target added; `None` when no lock
/// file can be made (the step then runs unlocked, as before).
fn toolchain_lock() -> Option<std::fs::File> {
    let file = open_lock_file()?;
    file.lock().ok()?;
    Some(file)
}

fn open_lock_file() -> Option<std::fs::File> {
    let home = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".rustup")))
        .filter(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(home.join("fossa-toolchain.lock"))
        .ok()
}

/// Checks what the build needs, adds the Rust target if missing, and builds;
/// returns the binary's path. `say` reports each step.
pub fn build(plan: &BuildPlan, say: &dyn Fn(&str)) -> Result<PathBuf, BuildError> {
    let missing = |tool: &str, hint: &str| BuildError::Missing {
        tool: tool.to_owned(),
        hint: hint.to_owned(),
    };
    if !on_path("cargo") {
        return Err(missing(
            "cargo",
            "install Rust with rustup (https://rustup.rs), then open a new shell",
        ));
    }
    // A cross build uses cargo-zigbuild when it and zig are here, else the
    // target's musl cross compiler.
    let zig = plan.cross() && on_path("cargo-zigbuild") && has_zig();
    if !zig && !on_path(plan.c_compiler) {
        return Err(missing(plan.c_compiler, plan.c_compiler_hint));
    }
    // rustup is not safe to run twice at once for one target: two launches
    // (or two tests) adding it together left it half installed ("detected
    // conflict"). One at a time, this user's toolchain step is.
    let _toolchain = toolchain_lock();
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(&plan.workspace)
        .output();
    let has_target = match &installed {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.trim() == plan.target),
        _ => {
            return Err(missing(
                "rustup",
                &format!(
                    "the Rust target {} is added with rustup (https://rustup.rs)",
                    plan.target
                ),
            ))
        }
    };
    if !has_target {
        say(&format!(
            "adding the Rust target {} (rustup target add)",
            plan.target
        ));
        run(
            Command::new("rustup")
                .args(["target", "add", plan.target])
                .current_dir(&plan.workspace),
            &format!("rustup target add {}", plan.target),
        )?;
    }
    let args = plan.cargo_args(zig);
    say(&format!(
        "building the agent: cargo {} (a first release build takes about 12 minutes)",
        args.join(" ")
    ));
    let mut cargo = Command::new("cargo");
    cargo.args(&args).current_dir(&plan.workspace);
    if !zig {
        cargo.envs(plan.env());
    }
    run(&mut cargo, &format!("cargo {}", args.join(" ")))?;
    Ok(plan.output())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_toolchain_step_is_one_at_a_time() {
        let held = toolchain_lock().expect("a lock file in the rustup home");
        let other = open_lock_file().unwrap();
        assert!(other.try_lock().is_err(), "a second launch waits");
        drop(held);
        assert!(
            other.try_lock().is_ok(),
            "and goes on once the first is done"
        );
    }

    #[test]
    fn each_architecture_gets_its_target_and_compiler() {
        let ws = PathBuf::from("/src/fossa-gateway");
        let x = BuildPlan::new(ws.clone(), None, Arch::X86_64, "x86_64", "release");
        assert_eq!(x.target, "x86_64-unknown-linux-musl");
        assert_eq!(x.c_compiler, "musl-gcc");
        assert!(x.env().is_empty());
        assert_eq!(
            x.output(),
            PathBuf::from(
                "/src/fossa-gateway/target/x86_64-unknown-linux-musl/release/fossa-agent"
            )
        );
        assert_eq!(
            x.cargo_args(false).join(" "),
            "build --locked --profile release -p fossa-agent --target x86_64-unknown-linux-musl"
        );
        assert!(!x.cross());
        let arm = BuildPlan::new(
            ws.clone(),
            Some("/cache".into()),
            Arch::Arm64,
            "x86_64",
            "dev",
        );
        assert_eq!(arm.target, "aarch64-unknown-linux-musl");
        assert_eq!(arm.c_compiler, "aarch64-linux-musl-gcc");
        assert!(arm.cross());
        assert_eq!(
            arm.cargo_args(true).join(" "),
            "zigbuild --locked --profile dev -p fossa-agent --target aarch64-unknown-linux-musl"
        );
        assert_eq!(
            arm.env(),
            vec![
                (
                    "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER".to_owned(),
                    "aarch64-linux-musl-gcc".to_owned()
                ),
                (
                    "CC_aarch64_unknown_linux_musl".to_owned(),
                    "aarch64-linux-musl-gcc".to_owned()
                ),
            ]
        );
        assert!(arm
            .output()
            .ends_with("aarch64-unknown-linux-musl/debug/fossa-agent"));
        let native_arm = BuildPlan::new(ws, None, Arch::Arm64, "aarch64", "release");
        assert_eq!(native_arm.c_compiler, "musl-gcc");
    }

    #[test]
    fn the_workspace_is_found_from_inside_it_only() {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = find_workspace(&here.join("src")).expect("this checkout");
        assert!(root.join("agent/Cargo.toml").is_file());
        assert_eq!(find_workspace(Path::new("/")), None);
    }
}
