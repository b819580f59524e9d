//! Two agents against one stack (an upgrade, a replacement, a second
//! instance by mistake), with moto's S3 answering the lease's conditional
//! writes: one acts, the other says it stands by and acts on nothing; a
//! clean stop of the first hands over at once, and a kill -9 of the holder
//! hands over without waiting its lease out (the holder is a dead agent of
//! this host). Each takeover is timed.

use std::time::{Duration, Instant};

use fossa_tests::stack::Stack;
use fossa_tests::{agent_client, bin, eventually, free_port, holds, Run, TempDir};

/// `fossa-bootstrap ARGS` against this stack.
fn bootstrap(stack: &Stack, args: &[&str]) -> Run {
    Run::of(
        std::process::Command::new(bin("fossa-bootstrap"))
            .args(args)
            .args(["--stack", &stack.name, "--endpoint-url", &stack.moto.url])
            .envs(stack.moto.env()),
    )
}

/// The overview's status with basic auth.
async fn status_with_password(base: &str, password: &str) -> u16 {
    agent_client()
        .get(format!("{base}/api/v1/overview"))
        .basic_auth("fossa", Some(password))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// A copy of `config` with its own state directory and UI port, as a
/// second gateway of the same stack would have.
fn second_config(stack: &Stack, config: &std::path::Path, dir: &TempDir) -> std::path::PathBuf {
    let text = std::fs::read_to_string(config).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("state_dir = ") {
                format!("state_dir = \"{}\"", dir.0.join("state").display())
            } else if l.starts_with("listen = ") {
                format!("listen = \"127.0.0.1:{}\"", free_port())
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = stack.dir.0.join("agent-second.toml");
    std::fs::write(&path, text + "\n").unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn one_agent_acts_the_other_stands_by_and_takes_over() {
    let stack = Stack::launch("lease").await;
    let first_config = stack.config(&["cluster"]);
    let second_dir = TempDir::new("second-agent");
    let second_config = second_config(&stack, &first_config, &second_dir);

    let first = stack.agent(&first_config, "first.log", &[]);
    first.wait_log(&["this agent acts for the stack"], Duration::from_secs(60));
    first.wait_log(&["waiting for the worker image"], Duration::from_secs(60));

    let second = stack.agent(&second_config, "second.log", &[]);
    second.wait_log(
        &["lease", "standing by: another agent", "runs to"],
        Duration::from_secs(60),
    );
    // Its acting duties wait and say why; it acts on nothing.
    second.wait_log(&["cluster", "queue", "autoscale"], Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(12));
    let log = second.log();
    assert!(
        !log.contains("this agent acts for the stack"),
        "two agents act at once:\n{log}"
    );
    assert!(
        !log.contains("waiting for the worker image"),
        "the second agent's cluster duty ran:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("cluster") && l.contains("standing by: another agent")),
        "the cluster duty says it stands by:\n{log}"
    );

    // A clean stop hands the stack over at once.
    let stopped = Instant::now();
    let first_log = first.stop();
    assert!(first_log.contains("this agent acts for the stack"));
    let took = second.wait_log(&["this agent acts for the stack"], Duration::from_secs(30));
    second.wait_log(&["waiting for the worker image"], Duration::from_secs(30));
    println!(
        "figures: takeover after a clean stop {:.1} s",
        stopped.elapsed().as_secs_f64().min(took.as_secs_f64())
    );

    // The first comes back and waits; the second is killed with -9: the
    // first takes over without waiting the lease out. The password is
    // rotated in the first seconds of its start (before or after its UI
    // read it): afterwards only the new one works.
    let old = bootstrap(&stack, &["password"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    let again = stack.agent(&first_config, "first-again.log", &[]);
    let new = bootstrap(&stack, &["password", "--rotate"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    assert!(new.len() >= 12 && new != old);
    let base = format!("https://127.0.0.1:{}", stack.ui_port);
    eventually(
        "only the new password",
        Duration::from_secs(60),
        async || {
            let (n, o) = (
                status_with_password(&base, &new).await,
                status_with_password(&base, &old).await,
            );
            holds(n == 200 && o == 401, || format!("new {n}, old {o}"))
        },
    )
    .await;
    again.wait_log(&["standing by: another agent"], Duration::from_secs(60));
    let mut second = second;
    let killed = Instant::now();
    second.kill9();
    again.wait_log(&["this agent acts for the stack"], Duration::from_secs(40));
    let after_kill = killed.elapsed();
    println!(
        "figures: takeover after a kill -9 of the holder {:.1} s (its lease runs {} s)",
        after_kill.as_secs_f64(),
        fossa_contract::limits::LEASE_SECS
    );
    assert!(
        after_kill < Duration::from_secs(fossa_contract::limits::LEASE_SECS as u64),
        "the lease of a dead agent of this host was waited out"
    );
    again.stop();
    stack.assert_agent_actions_allowed();
}
