//! The AWS path as far as this machine allows: `fossa-bootstrap launch
//! --no-wait` against moto_server, then `fossa-agent run` pointed at the same
//! emulator, with a real dockerd building the worker image (from a base
//! imported from a busybox rootfs) and pushing it to a real registry with
//! htpasswd auth standing in for ECR, the broker as a container, and the ECS
//! cluster, task definition and service created in the emulator. A second
//! start changes nothing; a changed model gives exactly one new image and one
//! new revision; destroy leaves nothing.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fossa_tests::docker::{Dockerd, Registry};
use fossa_tests::moto::{Moto, REGION};
use fossa_tests::{bin, free_port, Run, TempDir};

struct Agent {
    child: Child,
    log: std::path::PathBuf,
}

impl Agent {
    fn start(
        config: &std::path::Path,
        moto: &Moto,
        docker: &Dockerd,
        log: std::path::PathBuf,
    ) -> Agent {
        let child = Command::new(bin("fossa-agent"))
            .args(["run", "--config"])
            .arg(config)
            .envs(moto.env())
            .env("DOCKER_HOST", &docker.host)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log(&self, needles: &[&str], within: Duration) -> Duration {
        let t = Instant::now();
        loop {
            let log = self.log();
            if needles.iter().all(|n| log.contains(n)) {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < within,
                "agent log never said {needles:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(mut self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "agent did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

async fn revisions(ecs: &aws_sdk_ecs::Client) -> Vec<String> {
    let out = ecs
        .list_task_definitions()
        .family_prefix("fossa-e2e-worker")
        .send()
        .await
        .unwrap();
    out.task_definition_arns().to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn launch_then_agent_builds_pushes_and_runs_the_cluster() {
    let moto = Moto::start();
    let sdk = moto.sdk().await;
    let ecr = aws_sdk_ecr::Client::new(&sdk);
    let token = ecr.get_authorization_token().send().await.unwrap();
    let token = aws_smithy_types::base64::decode(
        token.authorization_data()[0].authorization_token().unwrap(),
    )
    .unwrap();
    let ecr_password = String::from_utf8(token)
        .unwrap()
        .split_once(':')
        .unwrap()
        .1
        .to_owned();
    let registry = Registry::start(&ecr_password);
    let docker = Dockerd::start();
    docker.import_base("fossa-test-python:1", "[\"/bin/sh\"]");
    docker.import_base("fossa-test-broker:1", "[\"/bin/sleep\", \"3600\"]");

    let dir = TempDir::new("stack");
    let models = dir.0.join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::write(
        models.join("etl.py"),
        "import ayeaye\n\nclass SmallEtl(ayeaye.PartitionedModel):\n    pass\n",
    )
    .unwrap();
    let launch = |extra: &[&str]| {
        Run::of(
            Command::new(bin("fossa-bootstrap"))
                .args([
                    "launch",
                    "--stack",
                    "e2e",
                    "--allow-cidr",
                    "198.51.100.1/32",
                    "--no-wait",
                    "--workers",
                    "2",
                    "--endpoint-url",
                    &moto.url,
                ])
                .arg("--agent-binary")
                .arg(bin("fossa-agent"))
                .arg("--models")
                .arg(&models)
                .args(extra)
                .envs(moto.env()),
        )
        .ok()
    };
    launch(&[]);

    let ui_port = free_port();
    let config = dir.0.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "stack = \"e2e\"\nregion = \"{REGION}\"\nendpoint_url = \"{}\"\nstate_dir = \"{}\"\nlisten = \"127.0.0.1:{ui_port}\"\n\
             registry = \"{}\"\nbase_image = \"fossa-test-python:1\"\nbroker_image = \"fossa-test-broker:1\"\nbroker_address = \"127.0.0.1\"\n\
             duties = [\"broker\", \"image\", \"cluster\"]\n",
            moto.url,
            dir.0.join("state").display(),
            registry.address
        ),
    )
    .unwrap();

    // First start: build, push, broker, cluster.
    let agent = Agent::start(&config, &moto, &docker, dir.0.join("agent-1.log"));
    let first = agent.wait_log(
        &[
            "created the service with 2 workers",
            "broker container created",
        ],
        Duration::from_secs(180),
    );
    let log1 = agent.log();
    assert!(log1.contains("pushed 127.0.0.1:"), "{log1}");
    let repo = "fossa-e2e/worker";
    let tags = registry.tags(repo, &ecr_password);
    assert_eq!(tags.len(), 1, "one image pushed: {tags:?}");
    assert!(tags[0].starts_with("ctx-"));

    let ecs = aws_sdk_ecs::Client::new(&sdk);
    let cluster = ecs
        .describe_clusters()
        .clusters("fossa-e2e")
        .send()
        .await
        .unwrap();
    let c = &cluster.clusters()[0];
    assert_eq!(c.status(), Some("ACTIVE"));
    let mut providers = c.capacity_providers().to_vec();
    providers.sort();
    assert_eq!(providers, ["FARGATE", "FARGATE_SPOT"]);
    assert_eq!(revisions(&ecs).await.len(), 1);
    let td = ecs
        .describe_task_definition()
        .task_definition("fossa-e2e-worker")
        .send()
        .await
        .unwrap();
    let td = td.task_definition().unwrap();
    assert_eq!(td.cpu(), Some("256"));
    assert_eq!(td.memory(), Some("512"));
    assert_eq!(td.network_mode().map(|m| m.as_str()), Some("awsvpc"));
    let container = &td.container_definitions()[0];
    assert_eq!(
        container.image(),
        Some(format!("{}/{repo}:{}", registry.address, tags[0]).as_str())
    );
    assert_eq!(container.secrets()[0].name(), "RABBITMQ_URL");
    assert_eq!(container.secrets()[0].value_from(), "/fossa/e2e/broker-url");
    assert!(
        container
            .environment()
            .iter()
            .all(|e| e.name() != Some("RABBITMQ_URL")),
        "the broker URL is not plain environment"
    );
    assert_eq!(container.port_mappings()[0].container_port(), Some(2345));
    assert!(container.health_check().is_some());
    assert_eq!(
        container.log_configuration().unwrap().log_driver().as_str(),
        "awslogs"
    );
    let svc = ecs
        .describe_services()
        .cluster("fossa-e2e")
        .services("fossa-e2e-workers")
        .send()
        .await
        .unwrap();
    let svc = &svc.services()[0];
    assert_eq!(svc.desired_count(), 2);
    let net = svc
        .network_configuration()
        .unwrap()
        .awsvpc_configuration()
        .unwrap();
    assert_eq!(net.assign_public_ip().map(|a| a.as_str()), Some("DISABLED"));
    assert_eq!(net.subnets().len(), 2);
    // moto does not echo the deployment circuit breaker back; when it does, it must be on.
    if let Some(breaker) = svc
        .deployment_configuration()
        .and_then(|d| d.deployment_circuit_breaker())
    {
        assert!(breaker.enable() && breaker.rollback());
    }
    let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk);
    let groups = logs
        .describe_log_groups()
        .log_group_name_prefix("/fossa/e2e/")
        .send()
        .await
        .unwrap();
    assert_eq!(groups.log_groups()[0].retention_in_days(), Some(7));
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let broker_url = ssm
        .get_parameter()
        .name("/fossa/e2e/broker-url")
        .with_decryption(true)
        .send()
        .await
        .unwrap();
    let broker_url = broker_url.parameter().unwrap();
    assert_eq!(
        broker_url.r#type().map(|t| t.as_str()),
        Some("SecureString")
    );
    let url = broker_url.value().unwrap().to_owned();
    assert!(
        url.starts_with("amqp://fossa:")
            && url.ends_with("@127.0.0.1:5672/%2F")
            && !url.contains("guest")
    );
    let fp = ssm
        .get_parameter()
        .name("/fossa/e2e/tls-fingerprint")
        .send()
        .await
        .unwrap();
    assert_eq!(fp.parameter().unwrap().value().unwrap().len(), 95);
    // The agent serves the UI over TLS with the password from SSM.
    let pw = ssm
        .get_parameter()
        .name("/fossa/e2e/ui-password")
        .with_decryption(true)
        .send()
        .await
        .unwrap();
    let pw = pw.parameter().unwrap().value().unwrap().to_owned();
    let http = fossa_tests::agent_client();
    let ui = format!("https://127.0.0.1:{ui_port}");
    assert_eq!(
        http.get(format!("{ui}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{ui}/api/v1/overview"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // The snapshot is refreshed every 2 s; wait for the one that follows the build.
    let deadline = Instant::now() + Duration::from_secs(15);
    let overview = loop {
        let o: serde_json::Value = http
            .get(format!("{ui}/api/v1/overview"))
            .basic_auth("fossa", Some(&pw))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if o["image"]["ok"] == true && o["broker"]["ok"] == true || Instant::now() > deadline {
            break o;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(overview["mode"], "fargate");
    assert_eq!(overview["models"], serde_json::json!(["SmallEtl"]));
    assert_eq!(overview["image"]["ok"], true, "{overview}");
    assert_eq!(overview["broker"]["ok"], true, "{overview}");
    assert_eq!(overview["desired_workers"], 2);
    assert!(overview["cost"]["nat_gateway_hourly"].as_f64().unwrap() > 0.0);
    let running = Run::of(docker.cli().args([
        "inspect",
        "-f",
        "{{.State.Running}} {{.HostConfig.RestartPolicy.Name}}",
        "fossa-broker",
    ]))
    .ok()
    .stdout;
    assert_eq!(running.trim(), "true unless-stopped");
    agent.stop();
    for secret in [url.as_str(), ecr_password.as_str(), pw.as_str()] {
        assert!(!log1.contains(secret), "a secret is in the agent's log");
    }

    // Second start: nothing changes.
    let agent = Agent::start(&config, &moto, &docker, dir.0.join("agent-2.log"));
    let noop = agent.wait_log(
        &["is up to date", "cluster up to date", "broker running"],
        Duration::from_secs(60),
    );
    let log2 = agent.log();
    assert!(!log2.contains("building "), "no rebuild: {log2}");
    assert_eq!(revisions(&ecs).await.len(), 1, "no new revision");
    assert_eq!(registry.tags(repo, &ecr_password).len(), 1);

    // A changed model: exactly one new image and one new revision, after a reload.
    std::fs::write(
        models.join("etl.py"),
        "import ayeaye\n\nclass SmallEtl(ayeaye.PartitionedModel):\n    complexity = 2\n",
    )
    .unwrap();
    launch(&[]);
    Command::new("kill")
        .args(["-HUP", &agent.child.id().to_string()])
        .status()
        .unwrap();
    agent.wait_log(
        &["updated the service to the new revision"],
        Duration::from_secs(120),
    );
    assert_eq!(revisions(&ecs).await.len(), 2);
    assert_eq!(registry.tags(repo, &ecr_password).len(), 2);
    let svc = ecs
        .describe_services()
        .cluster("fossa-e2e")
        .services("fossa-e2e-workers")
        .send()
        .await
        .unwrap();
    assert!(svc.services()[0].task_definition().unwrap().ends_with(":2"));
    assert_eq!(
        svc.services()[0].desired_count(),
        2,
        "desiredCount untouched"
    );
    agent.stop();

    // `fossa-agent build` runs the image duty once: the image exists, so it only prints its reference.
    let built = Run::of(
        Command::new(bin("fossa-agent"))
            .args(["build", "--config"])
            .arg(&config)
            .envs(moto.env())
            .env("DOCKER_HOST", &docker.host),
    )
    .ok();
    let td = ecs
        .describe_task_definition()
        .task_definition("fossa-e2e-worker")
        .send()
        .await
        .unwrap();
    assert_eq!(
        built.stdout.trim(),
        td.task_definition().unwrap().container_definitions()[0]
            .image()
            .unwrap()
    );
    assert_eq!(
        registry.tags(repo, &ecr_password).len(),
        2,
        "nothing new was built"
    );
    eprintln!("figures: first reconcile (build + push + cluster) {first:?}; no-op reconcile after restart {noop:?}");

    // destroy removes what the agent made too.
    let destroyed = Run::of(
        Command::new(bin("fossa-bootstrap"))
            .args([
                "destroy",
                "--stack",
                "e2e",
                "--yes",
                "--endpoint-url",
                &moto.url,
            ])
            .envs(moto.env()),
    )
    .ok();
    assert!(
        destroyed.stdout.contains("nothing left"),
        "{}",
        destroyed.stdout
    );
    assert!(ecs
        .describe_clusters()
        .clusters("fossa-e2e")
        .send()
        .await
        .unwrap()
        .clusters()
        .iter()
        .all(|c| c.status() != Some("ACTIVE")));
    assert!(ecr
        .describe_repositories()
        .repository_names(repo)
        .send()
        .await
        .is_err());
    assert!(
        revisions(&ecs).await.iter().all(|_| false)
            || ecs
                .list_task_definitions()
                .family_prefix("fossa-e2e-worker")
                .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
                .send()
                .await
                .unwrap()
                .task_definition_arns()
                .is_empty()
    );
}
