//! Bad input to `fossa-bootstrap` gets one clear line naming the problem and
//! what to do, before any AWS call where it can, and never a panic.

use std::process::Command;

use fossa_tests::bootstrap::{bootstrap, ALLOW};
use fossa_tests::moto::Moto;
use fossa_tests::{bin, Run};

#[test]
fn bad_input_gets_one_clear_line() {
    let moto = Moto::start();
    let cases: &[(&[&str], &str)] = &[
        (&["launch", "--vpc-cidr", "nope", "--no-wait"], "--vpc-cidr"),
        (
            &[
                "launch",
                "--vpc-cidr",
                "8.8.0.0/16",
                "--allow-cidr",
                ALLOW,
                "--no-wait",
            ],
            "private /16 to /22",
        ),
        (&["launch", "--stack", "Bad_Name"], "invalid stack name"),
        (&["launch", "--allow-cidr", "1.2.3.4/99"], "--allow-cidr"),
        (&["launch", "--workers", "5000"], "--workers"),
        (
            &[
                "launch",
                "--min-workers",
                "5",
                "--max-workers",
                "2",
                "--allow-cidr",
                ALLOW,
            ],
            "--min-workers 5 is above --max-workers 2",
        ),
        (
            &["launch", "--max-workers", "5000", "--allow-cidr", ALLOW],
            "1000 or fewer",
        ),
        (&["launch", "--max-workers", "-1"], "--max-workers"),
        (
            // A /22 VPC has /24 private subnets: 502 addresses, 251 workers
            // with a deployment's surge.
            &[
                "launch",
                "--vpc-cidr",
                "10.20.0.0/22",
                "--max-workers",
                "300",
                "--allow-cidr",
                ALLOW,
                "--no-wait",
            ],
            "300 workers need up to 600 addresses while a deployment replaces them",
        ),
        (
            &[
                "launch",
                "--max-workers",
                "3",
                "--idle-window",
                "0",
                "--allow-cidr",
                ALLOW,
            ],
            "--idle-window 0",
        ),
        (
            &["launch", "--no-autoscale", "--max-workers", "3"],
            "cannot be used with",
        ),
        (
            &["launch", "--instance-type", "large", "--allow-cidr", ALLOW],
            "instance type",
        ),
        (
            &[
                "launch",
                "--agent-binary",
                "/etc/hostname",
                "--allow-cidr",
                ALLOW,
            ],
            "not a Linux executable",
        ),
        (
            &[
                "launch",
                "--agent-binary",
                "/nonexistent/agent",
                "--allow-cidr",
                ALLOW,
            ],
            "cannot read /nonexistent/agent",
        ),
        (&["status", "--region", "mars-1"], "unknown AWS region"),
        (&["status", "--output", "yaml"], "--output"),
        (&["status", "--stack", "ghost"], "does not exist"),
        (&["password", "--stack", "ghost"], "no password"),
        (
            &["password", "--rotate", "--stack", "ghost"],
            "has no configuration",
        ),
        (
            &["scale", "--stack", "ghost", "--workers", "3"],
            "has no configuration",
        ),
        (&["scale", "--workers", "5000"], "--workers"),
        (&["scale"], "--workers"),
        (&["launch", "--cpu", "lots"], "--cpu"),
        (
            &[
                "launch",
                "--cpu",
                "1024",
                "--allow-cidr",
                ALLOW,
                "--no-wait",
            ],
            "with --cpu 1024 give --memory 2048, 3072",
        ),
        (
            &["launch", "--cpu", "300", "--allow-cidr", ALLOW, "--no-wait"],
            "no task of 300 CPU units",
        ),
        (&["launch", "--wait-timeout", "0"], "--wait-timeout"),
        (
            &["launch", "--allow-cidr", "0.0.0.0/0", "--no-wait"],
            "pass --allow-anywhere",
        ),
        (
            &["launch", "--allow-cidr", "203.0.113.7/24", "--no-wait"],
            "did you mean 203.0.113.0/24",
        ),
        (&["plan", "--allow-cidr", "0.0.0.0/0"], "--allow-anywhere"),
        (&["plan", "--output", "yaml"], "--output"),
        (&["plan", "--models", "/nonexistent/models"], "--models"),
    ];
    for (args, needle) in cases {
        let r = Run::of(&mut bootstrap(&moto, args));
        check(args, needle, &r);
    }
    // A models directory holding a link (a cloned repo's `config.txt ->
    // ~/.aws/credentials`): refused by name before anything is read or made.
    let links = fossa_tests::TempDir::new("models-links");
    std::fs::write(links.0.join("etl.py"), "x = 1\n").unwrap();
    std::os::unix::fs::symlink("/etc/hostname", links.0.join("config.txt")).unwrap();
    let dir = links.0.display().to_string();
    let args = [
        "launch",
        "--models",
        &dir,
        "--allow-cidr",
        ALLOW,
        "--no-wait",
    ];
    let r = Run::of(&mut bootstrap(&moto, &args));
    check(&args, "config.txt is a symbolic link", &r);
    // A chosen password under 12 characters is refused before any AWS call,
    // and never echoed.
    let mut weak = bootstrap(&moto, &["launch", "--allow-cidr", ALLOW, "--no-wait"]);
    weak.env("GATEWAY_HTTP_PASSWORD", "hunter2");
    let r = Run::of(&mut weak);
    check(
        &["launch (GATEWAY_HTTP_PASSWORD=hunter2)"],
        "at least 12",
        &r,
    );
    assert!(!r.stderr.contains("hunter2"), "{}", r.stderr);
    let mut weak = bootstrap(&moto, &["password", "--rotate", "--stack", "ghost"]);
    weak.env("GATEWAY_HTTP_PASSWORD", "hunter2");
    let r = Run::of(&mut weak);
    check(
        &["password --rotate (GATEWAY_HTTP_PASSWORD=hunter2)"],
        "at least 12",
        &r,
    );
    assert!(!r.stderr.contains("hunter2"), "{}", r.stderr);
    // Without --allow-cidr the caller's public IP is looked up; when that fails, say what to do.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let r = Run::of(
        bootstrap(
            &moto,
            &[
                "launch",
                "--stack",
                "noip",
                "--no-wait",
                "--agent-binary",
                "/bin/busybox",
            ],
        )
        .env("FOSSA_PUBLIC_IP_URL", format!("http://{closed}/")),
    );
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("could not find your public IP") && r.stderr.contains("--allow-cidr"),
        "{}",
        r.stderr
    );
    // Without credentials the error says how to get some.
    let mut c = Command::new(bin("fossa-bootstrap"));
    c.args([
        "status",
        "--endpoint-url",
        &moto.url,
        "--region",
        "eu-west-2",
    ])
    .env_clear()
    .env("PATH", std::env::var("PATH").unwrap())
    .env("HOME", "/nonexistent")
    .env("AWS_EC2_METADATA_DISABLED", "true");
    let r = Run::of(&mut c);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("credentials"), "{}", r.stderr);
}

/// A refused command: non-zero, the expected words on stderr, no panic.
fn check(args: &[&str], needle: &str, r: &Run) {
    assert_ne!(r.code, 0, "{args:?} succeeded");
    assert!(
        r.stderr.contains(needle),
        "{args:?}: expected {needle:?} in:\n{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("panicked"),
        "{args:?} panicked: {}",
        r.stderr
    );
}

/// `launch` without `--agent-binary` inside the source tree builds the
/// agent; what that needs and is missing is named, with how to get it,
/// before any AWS call.
#[test]
fn launch_from_the_checkout_names_what_the_agent_build_lacks() {
    let moto = Moto::start();
    let tools = fossa_tests::TempDir::new("no-musl-path");
    let which = |p: &str| {
        Run::of(Command::new("sh").args(["-c", &format!("command -v {p}")]))
            .ok()
            .stdout
            .trim()
            .to_owned()
    };
    // cargo and rustup, but no musl C compiler.
    for p in ["cargo", "rustup"] {
        std::os::unix::fs::symlink(which(p), tools.0.join(p)).unwrap();
    }
    let launch = |path: &str, arch: &str, extra: &[&str]| {
        let mut c = bootstrap(
            &moto,
            &[
                "launch",
                "--stack",
                "build",
                "--allow-cidr",
                ALLOW,
                "--no-wait",
            ],
        );
        c.args(["--instance-type", arch])
            .args(extra)
            .current_dir(fossa_tests::repo_root().join("bootstrap/src"))
            .env("PATH", path);
        Run::of(&mut c)
    };
    let r = launch(&tools.0.display().to_string(), "t3.small", &[]);
    check(&["launch (no musl-gcc)"], "needs `musl-gcc`", &r);
    assert!(
        r.stderr.contains("musl-tools") && r.stderr.contains("--agent-binary"),
        "{}",
        r.stderr
    );
    let r = launch(&tools.0.display().to_string(), "t4g.small", &[]);
    check(
        &["launch --instance-type t4g.small"],
        "needs `aarch64-linux-musl-gcc`",
        &r,
    );
    // Spot with a Graviton gateway is refused before the arm64 build: were
    // the build first, this PATH would fail it on the missing compiler.
    let r = launch(&tools.0.display().to_string(), "t4g.small", &["--spot"]);
    check(
        &["launch --spot --instance-type t4g.small"],
        "Fargate Spot does not run ARM64 tasks",
        &r,
    );
    assert!(
        !r.stderr.contains("musl"),
        "refused before the build: {}",
        r.stderr
    );
    // No cargo at all.
    let empty = fossa_tests::TempDir::new("empty-path");
    let r = launch(&empty.0.display().to_string(), "t3.small", &[]);
    check(&["launch (no cargo)"], "needs `cargo`", &r);
    assert!(r.stderr.contains("rustup.rs"), "{}", r.stderr);
}
