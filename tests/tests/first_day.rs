//! The first day from a checkout: `fossa-bootstrap launch` without
//! `--agent-binary`, run inside the source tree, builds the static agent for
//! the instance itself (adding the Rust target if missing) and launches with
//! it. The build is the dev profile (`FOSSA_AGENT_PROFILE=dev`) into a target
//! directory kept in the test cache, so a warm run rebuilds only the agent.

use std::process::Command;
use std::time::Instant;

use fossa_tests::bootstrap::ALLOW;
use fossa_tests::moto::Moto;
use fossa_tests::{bin, repo_root, Run};
use sha2::{Digest, Sha256};

/// Where the test's musl builds of the agent are kept between runs.
fn build_cache() -> std::path::PathBuf {
    std::env::var_os("FOSSA_IMAGE_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/var/cache/fossa-tests/images".into())
        .join("../agent-build")
}

#[tokio::test(flavor = "multi_thread")]
async fn launch_from_the_checkout_builds_the_static_agent_itself() {
    let moto = Moto::start();
    let target_dir = build_cache();
    std::fs::create_dir_all(&target_dir).unwrap();
    let t = Instant::now();
    let r = Run::of(
        Command::new(bin("fossa-bootstrap"))
            .args([
                "launch",
                "--stack",
                "firstday",
                "--allow-cidr",
                ALLOW,
                "--no-wait",
            ])
            .args(["--endpoint-url", &moto.url])
            .current_dir(repo_root())
            .env("FOSSA_AGENT_PROFILE", "dev")
            .env("CARGO_TARGET_DIR", &target_dir)
            .envs(moto.env()),
    );
    let took = t.elapsed();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("built the x86_64 agent"), "{}", r.stderr);
    assert!(
        !r.stderr.contains("dynamically linked"),
        "the built agent is static: {}",
        r.stderr
    );
    let built = target_dir.join("x86_64-unknown-linux-musl/debug/fossa-agent");
    let bytes = std::fs::read(&built).unwrap();
    let info = fossa_bootstrap::elf::check(&bytes, fossa_bootstrap::plan::Arch::X86_64).unwrap();
    assert!(!info.dynamic, "{} is static", built.display());
    // The binary launch uploaded and recorded is the one it built.
    let ssm = aws_sdk_ssm::Client::new(&moto.sdk().await);
    let recorded = ssm
        .get_parameter()
        .name("/fossa/firstday/agent-sha256")
        .send()
        .await
        .unwrap();
    assert_eq!(
        recorded.parameter().unwrap().value().unwrap(),
        hex::encode(Sha256::digest(&bytes))
    );
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("built the x86_64 agent"))
        .unwrap_or_default()
        .to_owned();
    eprintln!("FIGURE launch from the checkout: {took:?} in all; {line}");
}

/// A Graviton instance type gets an arm64 agent: the cross build goes
/// through cargo-zigbuild (tests/run.sh installs it in `.tools`; zig is the
/// venv's `ziglang`), and the binary runs (here under qemu-user).
#[tokio::test(flavor = "multi_thread")]
async fn launch_for_graviton_builds_an_arm64_agent_that_runs() {
    use std::os::unix::fs::PermissionsExt;
    let moto = Moto::start();
    let target_dir = build_cache();
    std::fs::create_dir_all(&target_dir).unwrap();
    let shim = fossa_tests::TempDir::new("zig-shim");
    let zig = shim.0.join("zig");
    std::fs::write(
        &zig,
        format!(
            "#!/bin/sh\nexec {} -m ziglang \"$@\"\n",
            fossa_tests::venv_bin("python").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&zig, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tools = repo_root().join(".tools/bin");
    assert!(
        tools.join("cargo-zigbuild").is_file(),
        "cargo-zigbuild is missing from .tools: run tests/run.sh, which installs it"
    );
    let path = format!(
        "{}:{}:{}",
        tools.display(),
        shim.0.display(),
        std::env::var("PATH").unwrap()
    );
    let t = Instant::now();
    let r = Run::of(
        Command::new(bin("fossa-bootstrap"))
            .args([
                "launch",
                "--stack",
                "firstarm",
                "--allow-cidr",
                ALLOW,
                "--no-wait",
            ])
            .args(["--instance-type", "t4g.small", "--endpoint-url", &moto.url])
            .current_dir(repo_root())
            .env("PATH", path)
            .env("FOSSA_AGENT_PROFILE", "dev")
            .env("CARGO_TARGET_DIR", &target_dir)
            .envs(moto.env()),
    );
    let took = t.elapsed();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("built the arm64 agent"), "{}", r.stderr);
    let built = target_dir.join("aarch64-unknown-linux-musl/debug/fossa-agent");
    let bytes = std::fs::read(&built).unwrap();
    let info = fossa_bootstrap::elf::check(&bytes, fossa_bootstrap::plan::Arch::Arm64).unwrap();
    assert!(!info.dynamic, "{} is static", built.display());
    let ran = Run::of(
        Command::new("qemu-aarch64-static")
            .arg(&built)
            .arg("--version"),
    );
    assert!(
        ran.code == 0 && ran.stdout.starts_with("fossa-agent "),
        "the arm64 agent runs (qemu-user-static): {ran:?}"
    );
    let ssm = aws_sdk_ssm::Client::new(&moto.sdk().await);
    let recorded = ssm
        .get_parameter()
        .name("/fossa/firstarm/agent-sha256")
        .send()
        .await
        .unwrap();
    assert_eq!(
        recorded.parameter().unwrap().value().unwrap(),
        hex::encode(Sha256::digest(&bytes))
    );
    eprintln!("FIGURE launch --instance-type t4g.small from the checkout: {took:?}");
}
