//! The Fargate backend lists the service's tasks from the emulator: all 1,000
//! tasks, through ListTasks pages and DescribeTasks batches of 100, with their
//! private IPs from the ENI attachments, in 20 API calls counted at the HTTP
//! layer. Nothing connects to those addresses
//! (the emulator's IPs are random 10.x addresses): only the listing is tested.

use std::process::Command;
use std::sync::Arc;

use aws_sdk_ecs::types::{AssignPublicIp, AwsVpcConfiguration, LaunchType, NetworkConfiguration};
use fossa_agent::duties::Shared;
use fossa_agent::events::Events;
use fossa_agent::fleet::fargate::FargateBackend;
use fossa_agent::fleet::WorkerBackend;
use fossa_agent::host::exec::Host;
use fossa_contract::aws::CallCounter;
use fossa_tests::moto::Moto;
use fossa_tests::{bin, Run};

#[tokio::test(flavor = "multi_thread")]
async fn every_task_is_listed_with_its_private_address() {
    let moto = Moto::start();
    Run::of(
        Command::new(bin("fossa-bootstrap"))
            .args([
                "launch",
                "--stack",
                "list",
                "--allow-cidr",
                "198.51.100.1/32",
                "--no-wait",
                "--agent-binary",
                "/bin/busybox",
                "--endpoint-url",
                &moto.url,
            ])
            .envs(moto.env()),
    )
    .ok();
    let sdk = moto.sdk().await;
    let cfg = moto.stack_config("list").await;
    let ecs = aws_sdk_ecs::Client::new(&sdk);
    let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk);
    fossa_agent::duties::cluster::reconcile(
        &ecs,
        &logs,
        &cfg,
        "registry.example/fossa-list/worker:ctx-1",
    )
    .await
    .unwrap();
    // Hold tasks at RUNNING instead of moving them one step per describe.
    moto.control(
        "/moto-api/state-manager/set-transition",
        r#"{"model_name":"ecs::task","transition":{"progression":"manual","times":1000000}}"#,
    );
    let net = NetworkConfiguration::builder()
        .awsvpc_configuration(
            AwsVpcConfiguration::builder()
                .set_subnets(Some(
                    cfg.private_subnets.iter().map(|s| s.id.clone()).collect(),
                ))
                .security_groups(&cfg.task_security_group)
                .assign_public_ip(AssignPublicIp::Disabled)
                .build()
                .unwrap(),
        )
        .build();
    let total = 1000;
    for _ in 0..total / 10 {
        ecs.run_task()
            .cluster("fossa-list")
            .task_definition("fossa-list-worker")
            .launch_type(LaunchType::Fargate)
            .count(10)
            .network_configuration(net.clone())
            .send()
            .await
            .unwrap();
    }
    let counter = CallCounter::default();
    let counted = aws_sdk_ecs::Client::from_conf(
        aws_sdk_ecs::config::Builder::from(&sdk)
            .interceptor(counter.clone())
            .build(),
    );
    let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk);
    let log_reads = CallCounter::default();
    let counted_logs = aws_sdk_cloudwatchlogs::Client::from_conf(
        aws_sdk_cloudwatchlogs::config::Builder::from(&sdk)
            .interceptor(log_reads.clone())
            .build(),
    );
    let shared = Shared::new(Arc::new(Host), Events::default());
    let group = cfg.stack.log_group();
    let backend = FargateBackend::new(counted, counted_logs, cfg, &shared);
    let t = std::time::Instant::now();
    let workers = backend.list().await.unwrap();
    println!("ecs_list_{total}_tasks_calls: {} calls", counter.get());
    println!(
        "ecs_list_{total}_tasks_time: {} ms",
        t.elapsed().as_millis()
    );
    // 10 ListTasks pages of 100 and 10 DescribeTasks batches of 100.
    assert!(
        counter.get() <= 20,
        "listing {total} tasks took {} API calls",
        counter.get()
    );
    assert_eq!(
        workers.len(),
        total,
        "every task, across pages and batches of 100"
    );
    let mut ids: Vec<&str> = workers.iter().map(|w| w.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), total, "no task twice");
    for w in &workers {
        let (ip, port) = w.address.rsplit_once(':').unwrap();
        assert_eq!(port, "2345");
        assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "{}", w.address);
        assert!(!w.id.contains('/'), "the id is the task id, not its ARN");
    }
    assert!(
        workers
            .iter()
            .all(|w| w.status == "RUNNING" || w.status == "PROVISIONING" || w.status == "PENDING"),
        "{:?}",
        workers.iter().map(|w| &w.status).collect::<Vec<_>>()
    );

    // A worker's log comes from its awslogs stream in CloudWatch Logs,
    // with the broker's password replaced.
    let id = workers[0].id.clone();
    let stream = fossa_contract::names::worker_log_stream(&id);
    let _ = logs.create_log_group().log_group_name(&group).send().await;
    logs.create_log_stream()
        .log_group_name(&group)
        .log_stream_name(&stream)
        .send()
        .await
        .unwrap();
    let t0 = fossa_contract::unix_now_ms() - 10_000;
    let events: Vec<_> = (0..5)
        .map(|n| {
            aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                .timestamp(t0 + n * 1000)
                .message(if n == 2 {
                    "connected to amqp://fossa:hunter2-broker-pw@192.168.1.10:5672".to_owned()
                } else {
                    format!("line {n}")
                })
                .build()
                .unwrap()
        })
        .collect();
    logs.put_log_events()
        .log_group_name(&group)
        .log_stream_name(&stream)
        .set_log_events(Some(events))
        .send()
        .await
        .unwrap();
    shared
        .secrets
        .send_replace(vec!["hunter2-broker-pw".into()]);
    let q = |since_ms, limit| fossa_web::model::LogQuery {
        since_ms,
        until_ms: None,
        limit,
    };
    let tail = backend.logs(&id, &q(None, 3)).await.unwrap();
    let texts: Vec<_> = tail.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "connected to amqp://fossa:***@192.168.1.10:5672",
            "line 3",
            "line 4"
        ]
    );
    // Pages refreshing the same tail within a few seconds share one read,
    // so open tabs cannot run the account's GetLogEvents quota down.
    let reads = log_reads.get();
    for _ in 0..10 {
        assert_eq!(backend.logs(&id, &q(None, 3)).await.unwrap(), tail);
    }
    assert_eq!(log_reads.get(), reads, "ten refreshes, no new read");
    let after = backend.logs(&id, &q(Some(t0 + 3000), 100)).await.unwrap();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].text, "line 4");
    // A task without a stream yet has no lines, not an error.
    assert!(backend
        .logs(&workers[1].id, &q(None, 10))
        .await
        .unwrap()
        .is_empty());
}
