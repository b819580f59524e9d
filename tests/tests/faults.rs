//! Injected AWS faults: a proxy in front of moto_server answers a share of
//! calls with throttling, 500 or slow replies. `launch`, `destroy` and the
//! agent's cluster duty retry and finish; when every call fails they stop
//! with one clear line naming the call, and never panic.

use std::process::Command;
use std::time::Duration;

use fossa_tests::fault_proxy::FaultProxy;
use fossa_tests::moto::Moto;
use fossa_tests::{bin, Run};

fn bootstrap(moto: &Moto, endpoint: &str, args: &[&str]) -> Run {
    Run::of(
        Command::new(bin("fossa-bootstrap"))
            .args(args)
            .arg("--endpoint-url")
            .arg(endpoint)
            .envs(moto.env()),
    )
}

/// A fault that never stops must end in a line naming the failed call and
/// the fault the proxy injected (throttling or HTTP 500).
fn assert_names_call_and_fault(line: &str, call: &str) {
    assert!(line.contains(call), "names the call {call}: {line}");
    assert!(
        line.contains("Throttl") || line.contains("HTTP 500"),
        "says why: {line}"
    );
}

fn calls(stderr: &str) -> u32 {
    stderr
        .lines()
        .find_map(|l| {
            l.strip_suffix('s')
                .and_then(|_| l.split(" AWS API calls").next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn launch_and_destroy_ride_out_throttling_500s_and_slow_replies() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.url, 3, "throttle,500,slow");
    let agent = "/bin/busybox";
    let launch = bootstrap(
        &moto,
        &proxy.url,
        &[
            "launch",
            "--stack",
            "flaky",
            "--allow-cidr",
            "198.51.100.1/32",
            "--no-wait",
            "--agent-binary",
            agent,
        ],
    )
    .ok();
    let n = calls(&launch.stderr);
    assert!(
        n > 62,
        "faults cost extra attempts: {n} calls\n{}",
        launch.stderr
    );
    // Against the emulator directly, the stack is complete.
    let direct = bootstrap(
        &moto,
        &moto.url,
        &[
            "launch",
            "--stack",
            "flaky",
            "--allow-cidr",
            "198.51.100.1/32",
            "--no-wait",
            "--agent-binary",
            agent,
        ],
    )
    .ok();
    assert!(
        !direct.stderr.contains("created "),
        "the faulty launch left nothing to do:\n{}",
        direct.stderr
    );
    let destroyed = bootstrap(&moto, &proxy.url, &["destroy", "--stack", "flaky", "--yes"]).ok();
    assert!(
        destroyed.stdout.contains("nothing left"),
        "{}",
        destroyed.stdout
    );
}

#[test]
fn a_fault_that_never_stops_ends_in_one_clear_line() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.url, 1, "throttle,500");
    let r = bootstrap(
        &moto,
        &proxy.url,
        &[
            "launch",
            "--stack",
            "down",
            "--allow-cidr",
            "198.51.100.1/32",
            "--no-wait",
            "--agent-binary",
            "/bin/busybox",
        ],
    );
    assert_ne!(r.code, 0);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    let line = r
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line:\n{}", r.stderr));
    assert_names_call_and_fault(line, "AWS sts:GetCallerIdentity");
    let r = bootstrap(&moto, &proxy.url, &["status", "--stack", "down"]);
    assert_ne!(r.code, 0);
    assert_eq!(
        r.stderr.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{}",
        r.stderr
    );
}

/// A stack launched on `moto` (its instance never boots), and its config.
async fn launched(moto: &Moto, stack: &str) -> fossa_contract::config::StackConfig {
    bootstrap(
        moto,
        &moto.url,
        &[
            "launch",
            "--stack",
            stack,
            "--allow-cidr",
            "198.51.100.1/32",
            "--no-wait",
            "--agent-binary",
            "/bin/busybox",
        ],
    )
    .ok();
    moto.stack_config(stack).await
}

/// The agent builds its clients with the same `sdk_config` it uses on the
/// instance; here they point at the proxy.
async fn agent_clients(
    endpoint: &str,
    call_timeout: Option<Duration>,
) -> (aws_sdk_ecs::Client, aws_sdk_cloudwatchlogs::Client) {
    let sdk = fossa_contract::aws::sdk_config(&fossa_contract::aws::AwsSettings {
        region: Some(fossa_tests::moto::REGION.into()),
        profile: None,
        endpoint_url: Some(endpoint.into()),
        call_timeout,
    })
    .await
    .unwrap();
    (
        aws_sdk_ecs::Client::new(&sdk),
        aws_sdk_cloudwatchlogs::Client::new(&sdk),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agents_cluster_duty_rides_out_faults_and_names_the_call_when_they_never_stop() {
    let moto = Moto::start();
    // The agent's credentials come from the default chain, as on the instance.
    for (k, v) in moto.env() {
        std::env::set_var(k, v);
    }
    let cfg = launched(&moto, "agentf").await;

    let flaky = FaultProxy::start(&moto.url, 3, "throttle,500,slow");
    let (ecs, logs) = agent_clients(&flaky.url, None).await;
    let done =
        fossa_agent::duties::cluster::reconcile(&ecs, &logs, &cfg, "registry.example/w:ctx-1")
            .await
            .expect("retries ride out one fault in three");
    assert!(done.summary.contains("created the service"), "{done:?}");
    assert_eq!(done.desired, cfg.workers as i32);

    let down = FaultProxy::start(&moto.url, 1, "throttle,500");
    let (ecs, logs) = agent_clients(&down.url, None).await;
    let err =
        fossa_agent::duties::cluster::reconcile(&ecs, &logs, &cfg, "registry.example/w:ctx-2")
            .await
            .expect_err("every call fails");
    let line = err.to_string();
    assert!(!line.contains('\n'), "one line: {line}");
    assert_names_call_and_fault(&line, "AWS logs:DescribeLogGroups");
}

/// A call that never answers (the proxy reads it and holds the connection)
/// ends at the call's time limit, retries included, with the line naming
/// the call: no duty waits for ever on AWS.
#[tokio::test(flavor = "multi_thread")]
async fn an_aws_call_that_never_answers_ends_at_its_limit_naming_the_call() {
    let moto = Moto::start();
    for (k, v) in moto.env() {
        std::env::set_var(k, v);
    }
    let cfg = launched(&moto, "agenth").await;
    let hung = FaultProxy::start(&moto.url, 1, "hang");
    let limit = Duration::from_secs(4);
    let (ecs, logs) = agent_clients(&hung.url, Some(limit)).await;
    let started = std::time::Instant::now();
    let err =
        fossa_agent::duties::cluster::reconcile(&ecs, &logs, &cfg, "registry.example/w:ctx-h")
            .await
            .expect_err("no call answers");
    let took = started.elapsed();
    eprintln!("a call that never answers ended after {took:?} (limit {limit:?})");
    assert!(took >= limit && took < limit * 3, "{took:?}");
    let line = err.to_string();
    assert!(!line.contains('\n'), "one line: {line}");
    assert!(line.contains("AWS logs:DescribeLogGroups"), "{line}");
    assert!(
        line.contains("did not answer within the call's time limit"),
        "{line}"
    );
    assert!(line.contains("timeout"), "{line}");
}
