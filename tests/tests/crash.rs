//! The agent killed in the middle of a reconcile, at every point where a
//! crash separates two writes (`FOSSA_FAULT_EXIT_AT`, exit 137 as a kill
//! would), then restarted: the restart finishes the job and nothing exists
//! twice: one image, one task definition revision, one service, one broker
//! container, broker credentials stored once, and the settings the crash cut
//! off (lifecycle policy, log retention) repaired.

use std::time::Duration;

use fossa_contract::fault::{Point, EXIT_AT};
use fossa_tests::stack::Stack;
use fossa_tests::Run;

/// Which duties reach a point on a fresh stack, one duty at a time so the
/// order is fixed (the cluster duty needs the image duty's reference).
fn duties_for(point: Point) -> &'static [&'static str] {
    match point {
        Point::EcrRepositoryCreated | Point::ImagePushed => &["image"],
        Point::BrokerUrlStored | Point::BrokerContainerCreated => &["broker"],
        _ => &["image", "cluster"],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_at_each_point_of_a_reconcile_is_finished_by_a_restart() {
    let stack = Stack::launch("crash").await;
    for p in Point::AGENT {
        let point = p.name();
        let config = stack.config(duties_for(p));
        let mut agent = stack.agent(
            &config,
            &format!("crash-{point}.log"),
            &[(EXIT_AT, point.as_str())],
        );
        let code = agent.wait_exit(Duration::from_secs(180));
        let log = agent.log();
        assert_eq!(code, 137, "the agent did not reach {point}:\n{log}");
        assert!(log.contains(&format!("fault injection: exiting at {point}")));
    }

    let config = stack.config(&["broker", "image", "cluster"]);
    let agent = stack.agent(&config, "after.log", &[]);
    agent.wait_log(
        &["created the service with 2 workers", "broker restarted"],
        Duration::from_secs(120),
    );
    let log = agent.log();
    assert!(
        !log.contains("building "),
        "the pushed image is reused, not built again:\n{log}"
    );
    agent.stop();

    let sdk = &stack.sdk;
    assert_eq!(stack.image_tags().len(), 1, "one image");
    let ecs = aws_sdk_ecs::Client::new(sdk);
    let revisions = ecs
        .list_task_definitions()
        .family_prefix("fossa-crash-worker")
        .send()
        .await
        .unwrap();
    assert_eq!(
        revisions.task_definition_arns().len(),
        1,
        "one revision: {:?}",
        revisions.task_definition_arns()
    );
    let services = ecs
        .list_services()
        .cluster("fossa-crash")
        .send()
        .await
        .unwrap();
    assert_eq!(services.service_arns().len(), 1, "one service");
    let svc = ecs
        .describe_services()
        .cluster("fossa-crash")
        .services("fossa-crash-workers")
        .send()
        .await
        .unwrap();
    assert!(svc.services()[0]
        .task_definition()
        .unwrap()
        .ends_with("fossa-crash-worker:1"));

    let ecr = aws_sdk_ecr::Client::new(sdk);
    let policy = ecr
        .get_lifecycle_policy()
        .repository_name(stack.repository())
        .send()
        .await
        .expect("the lifecycle policy the crash cut off is set");
    assert!(policy
        .lifecycle_policy_text()
        .unwrap()
        .contains("imageCountMoreThan"));
    let logs = aws_sdk_cloudwatchlogs::Client::new(sdk);
    let groups = logs
        .describe_log_groups()
        .log_group_name_prefix("/fossa/crash/")
        .send()
        .await
        .unwrap();
    assert_eq!(groups.log_groups().len(), 1, "one log group");
    assert_eq!(groups.log_groups()[0].retention_in_days(), Some(7));

    let ssm = aws_sdk_ssm::Client::new(sdk);
    let url = ssm
        .get_parameter()
        .name("/fossa/crash/broker-url")
        .send()
        .await
        .unwrap();
    assert_eq!(
        url.parameter().unwrap().version(),
        1,
        "the broker credentials were stored once and kept"
    );
    let containers = Run::of(stack.docker.cli().args([
        "ps",
        "-a",
        "--filter",
        "label=fossa.role=broker",
        "--format",
        "{{.Names}} {{.State}}",
    ]))
    .ok()
    .stdout;
    assert_eq!(
        containers.trim(),
        "fossa-broker running",
        "one broker container"
    );
}
