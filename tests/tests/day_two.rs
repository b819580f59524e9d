//! The second day, lived against real parts (moto_server, the agent with a
//! private dockerd, registry and the Python base): with the agent running and
//! no signal sent to it,
//! - `fossa-bootstrap password --rotate` ends a logged-in session; the new
//!   password works and the old one does not;
//! - `fossa-bootstrap scale --workers N` reaches the service through the agent;
//! - a re-run of `launch` without `--workers`, `--cpu` or `--models` keeps
//!   what the stack has (no revert to the example models, no rebuild);
//! - a re-run with `--cpu 512 --memory 1024` is applied by the cluster duty on its own;
//! - `status` shows each duty and the workers as the agent sees them, over
//!   HTTPS pinned to the agent's certificate, and refuses any other;
//! - `destroy` with the agent still running leaves nothing, and the agent
//!   makes nothing again afterwards.

use std::process::Command;
use std::time::{Duration, Instant};

use fossa_contract::config::StackConfig;
use fossa_tests::stack::Stack;
use fossa_tests::{agent_client, bin, eventually, holds, Run};

const STACK: &str = "daytwo";

fn bootstrap(stack: &Stack, args: &[&str]) -> Run {
    Run::of(
        Command::new(bin("fossa-bootstrap"))
            .args(args)
            .args(["--stack", STACK, "--endpoint-url", &stack.moto.url])
            .envs(stack.moto.env()),
    )
}

/// The `name=value` of each cookie a response sets.
fn cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
        .collect()
}

/// Logs in with the form, as a browser does; returns the session's Cookie header.
async fn login(base: &str, password: &str) -> String {
    // The session cookie comes with the redirect, which must not be followed.
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http.get(format!("{base}/login")).send().await.unwrap();
    let jar = cookies(&page).join("; ");
    let html = page.text().await.unwrap();
    let at = html
        .find("name=\"csrf_token\" value=\"")
        .expect("login form")
        + 25;
    let token = &html[at..at + html[at..].find('"').unwrap()];
    let r = http
        .post(format!("{base}/login"))
        .header("cookie", jar)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "username=fossa&password={password}&csrf_token={token}"
        ))
        .send()
        .await
        .unwrap();
    let session = cookies(&r);
    assert!(
        session.iter().any(|c| c.starts_with("fossa_session=")),
        "logged in: {} {session:?}",
        r.status()
    );
    session.join("; ")
}

async fn status_with_cookie(base: &str, cookie: &str) -> u16 {
    agent_client()
        .get(format!("{base}/api/v1/overview"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn status_with_password(base: &str, password: &str) -> u16 {
    agent_client()
        .get(format!("{base}/api/v1/overview"))
        .basic_auth("fossa", Some(password))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn stack_config(stack: &Stack) -> StackConfig {
    let ssm = aws_sdk_ssm::Client::new(&stack.sdk);
    let p = ssm
        .get_parameter()
        .name(format!("/fossa/{STACK}/config"))
        .send()
        .await
        .unwrap();
    StackConfig::parse("config", p.parameter().unwrap().value().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn passwords_scale_and_settings_apply_while_the_agent_runs() {
    let stack = Stack::launch(STACK).await;
    let ecs = aws_sdk_ecs::Client::new(&stack.sdk);
    let config = stack.config(&["image", "cluster"]);
    let agent = stack.agent(&config, "agent.log", &[]);
    agent.wait_log(
        &["created the service with 2 workers"],
        Duration::from_secs(240),
    );
    let base = format!("https://127.0.0.1:{}", stack.ui_port);

    // Rotation: the open session ends within the agent's check period.
    let old = bootstrap(&stack, &["password"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    let session = login(&base, &old).await;
    assert_eq!(status_with_cookie(&base, &session).await, 200);
    let rotated = bootstrap(&stack, &["password", "--rotate"]).ok();
    let new = rotated.stdout.trim().to_owned();
    assert!(new.len() >= 12 && new != old, "{rotated:?}");
    let t = Instant::now();
    eventually(
        "the old session refused",
        Duration::from_secs(60),
        async || {
            let still_works = status_with_cookie(&base, &session).await == 200;
            holds(!still_works, || format!("it still works:\n{}", agent.log()))
        },
    )
    .await;
    let rotate_took = t.elapsed();
    assert_eq!(status_with_password(&base, &new).await, 200);
    assert_eq!(status_with_password(&base, &old).await, 401);
    assert!(
        !agent.log().contains(&new),
        "the new password is not logged"
    );

    // Scale through the agent; the command waits until the service has it.
    let scaled = bootstrap(&stack, &["scale", "--workers", "5"]).ok();
    assert!(
        scaled.stdout.contains("the service wants 5 workers"),
        "{scaled:?}"
    );
    let desired = || async {
        ecs.describe_services()
            .cluster(format!("fossa-{STACK}"))
            .services(format!("fossa-{STACK}-workers"))
            .send()
            .await
            .unwrap()
            .services()[0]
            .desired_count()
    };
    assert_eq!(desired().await, 5);

    // A bare re-run keeps workers, cpu and the models.
    let launch = |extra: &[&str]| {
        let mut args = vec![
            "launch",
            "--allow-cidr",
            "198.51.100.1/32",
            "--no-wait",
            "--agent-binary",
        ];
        let agent_bin = bin("fossa-agent");
        let agent_bin = agent_bin.to_str().unwrap().to_owned();
        args.push(&agent_bin);
        args.extend_from_slice(extra);
        bootstrap(&stack, &args).ok()
    };
    let since = agent.log_len();
    let rerun = launch(&[]);
    assert!(rerun.stderr.contains("(kept from the stack)"), "{rerun:?}");
    let kept = stack_config(&stack).await;
    assert_eq!((kept.workers, kept.cpu, kept.has_models), (5, 256, true));
    tokio::time::sleep(Duration::from_secs(20)).await;
    let log = agent.log();
    let after = &log[since..];
    assert!(!after.contains("building "), "no rebuild: {after}");
    assert_eq!(desired().await, 5, "the service keeps its workers");

    // A changed setting is applied without a signal.
    let since = agent.log_len();
    let t = Instant::now();
    launch(&["--cpu", "512", "--memory", "1024"]);
    let applied = agent.wait_log_since(
        since,
        &[
            "applied configuration version",
            "registered fossa-daytwo-worker:2",
        ],
        Duration::from_secs(60),
    );
    let rerun_took = t.elapsed();
    let td = ecs
        .describe_task_definition()
        .task_definition(format!("fossa-{STACK}-worker"))
        .send()
        .await
        .unwrap();
    assert_eq!(td.task_definition().unwrap().cpu(), Some("512"));
    assert_eq!(desired().await, 5);
    eprintln!(
        "figures: password rotation ended the session after {rotate_took:?}; `launch --cpu 512` re-run and applied in {rerun_took:?} (the agent took {applied:?} of it)"
    );

    // status reads the duties from the agent, over HTTPS pinned to the
    // fingerprint in SSM; a certificate that does not match gets no password.
    let ui = format!("127.0.0.1:{}", stack.ui_port);
    let st = bootstrap(&stack, &["status", "--ui-address", &ui, "--output", "json"]).ok();
    let st: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    let duty = |name: &str| {
        st["duties"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {st}"))
    };
    assert_eq!(duty("cluster")["ok"], true, "{st}");
    assert_eq!(duty("config")["ok"], true, "{st}");
    assert!(duty("nat")["detail"]
        .as_str()
        .unwrap()
        .contains("not managed by this agent"));
    assert_eq!(st["workers"]["desired"], 5, "{st}");
    // The running agent says which binary it is: the one launch uploaded.
    let uploaded = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(std::fs::read(bin("fossa-agent")).unwrap()))
    };
    assert_eq!(st["running_agent"]["sha256"], uploaded.as_str(), "{st}");
    assert_eq!(
        st["running_agent"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{st}"
    );
    let text = bootstrap(&stack, &["status", "--ui-address", &ui])
        .ok()
        .stdout;
    assert!(
        text.contains("Cluster") && text.contains("workers: 5 desired"),
        "{text}"
    );
    // The cost as the agent meters it: per hour, month to date, and NAT
    // against a NAT Gateway (no NAT here, so no bytes, but a NAT Gateway's
    // hours would still have cost something).
    assert!(
        text.contains("  cost:  $") && text.contains("so far $"),
        "{text}"
    );
    assert!(
        text.contains("  NAT:   0.000 GB this month; a NAT Gateway would have cost $"),
        "{text}"
    );
    assert!(st["cost"]["stack_hourly"].as_f64().unwrap() > 0.0, "{st}");
    assert!(
        st["cost"]["nat_gateway_hourly"].as_f64().unwrap() > 0.0,
        "{st}"
    );
    let ssm = aws_sdk_ssm::Client::new(&stack.sdk);
    ssm.put_parameter()
        .name(format!("/fossa/{STACK}/tls-fingerprint"))
        .value(["00"; 32].join(":"))
        .overwrite(true)
        .send()
        .await
        .unwrap();
    let st = bootstrap(&stack, &["status", "--ui-address", &ui, "--output", "json"]).ok();
    let st: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert!(
        st["agent_api_error"]
            .as_str()
            .is_some_and(|e| e.contains("refusing to send the password")),
        "{st}"
    );

    // destroy wins against the running agent: it is told to stand down
    // first, so nothing it made comes back after destroy deleted it.
    let since = agent.log_len();
    let t = Instant::now();
    let destroyed = bootstrap(&stack, &["destroy", "--yes"]).ok();
    assert!(destroyed.stdout.contains("nothing left"), "{destroyed:?}");
    let destroy_took = t.elapsed();
    agent.wait_log_since(
        since,
        &["the stack is being destroyed: standing down"],
        Duration::from_secs(5),
    );
    // A few more of the agent's periods: still nothing.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let left = bootstrap(&stack, &["status"]);
    assert!(
        left.stdout.contains("does not exist") || left.stderr.contains("does not exist"),
        "the agent made something again after destroy: {left:?}\n{}",
        agent.log()
    );
    let clusters = ecs
        .describe_clusters()
        .clusters(format!("fossa-{STACK}"))
        .send()
        .await
        .unwrap();
    assert!(clusters
        .clusters()
        .iter()
        .all(|c| c.status() == Some("INACTIVE")));
    eprintln!("figures: destroy with the agent running took {destroy_took:?}");
    agent.stop();
}
