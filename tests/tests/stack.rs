//! The AWS path as far as this machine allows: `fossa-bootstrap launch
//! --no-wait` against moto_server, then `fossa-agent run` pointed at the same
//! emulator, with a real dockerd building the worker image (the real
//! Dockerfile and pip install of Fossa on a Python made from Debian's
//! packages, smoke-tested before the push) and pushing it to a real registry
//! with htpasswd auth standing in for ECR, the broker as a real RabbitMQ
//! container, and the ECS cluster, task definition and service created in the
//! emulator. A second start changes nothing; a changed model (with its own
//! requirements.txt) gives exactly one new image and one new revision; a model
//! that does not import or a requirement that cannot install is an event
//! naming it, and nothing is pushed; no page, log, command line, unit file or
//! user-data holds a secret; destroy leaves nothing.

use std::process::Command;
use std::time::Duration;

use fossa_tests::bootstrap::user_data;
use fossa_tests::secrets::{assert_absent, crawl, every_command_line, url_password, Place};
use fossa_tests::stack::Stack;
use fossa_tests::{bin, eventually, Run};

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
    let stack = Stack::launch("e2e").await;
    let (sdk, docker, moto) = (&stack.sdk, &stack.docker, &stack.moto);
    let ecr = aws_sdk_ecr::Client::new(sdk);
    let ui_port = stack.ui_port;
    let config = stack.config(&["broker", "image", "cluster"]);

    // First start: build, push, broker, cluster.
    let agent = stack.agent(&config, "agent-1.log", &[]);
    let first = agent.wait_log(
        &[
            "created the service with 2 workers",
            "broker container created",
        ],
        Duration::from_secs(180),
    );
    let log1 = agent.log();
    assert!(log1.contains("pushed 127.0.0.1:"), "{log1}");
    let repo = stack.repository();
    let tags = stack.image_tags();
    assert_eq!(tags.len(), 1, "one image pushed: {tags:?}");
    assert!(tags[0].starts_with("ctx-"));

    let ecs = aws_sdk_ecs::Client::new(sdk);
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
        Some(format!("{}/{repo}:{}", stack.registry.address, tags[0]).as_str())
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
    let logs = aws_sdk_cloudwatchlogs::Client::new(sdk);
    let groups = logs
        .describe_log_groups()
        .log_group_name_prefix("/fossa/e2e/")
        .send()
        .await
        .unwrap();
    assert_eq!(groups.log_groups()[0].retention_in_days(), Some(7));
    let ssm = aws_sdk_ssm::Client::new(sdk);
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
    let what = "the overview showing the image and the broker ok";
    let overview = eventually(what, Duration::from_secs(15), async || {
        let o: serde_json::Value = http
            .get(format!("{ui}/api/v1/overview"))
            .basic_auth("fossa", Some(&pw))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if o["image"]["ok"] == true && o["broker"]["ok"] == true {
            Ok(o)
        } else {
            Err(o)
        }
    })
    .await;
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
    // Secrets: the UI password, the broker's credentials and the registry
    // token are on no page, API reply, log, command line, unit file or user-data.
    let mut places = crawl(&ui, &pw, 200).await;
    places.push(every_command_line());
    places.push(Place::new("the agent's log", agent.stop()));
    places.push(Place::new("launch's output", stack.launched.stdout.clone()));
    places.push(Place::new("launch's log", stack.launched.stderr.clone()));
    places.push(Place::new("the user-data", user_data(sdk, "e2e").await));
    places.push(Place::new(
        "systemd/fossa-agent.service",
        std::fs::read_to_string(fossa_tests::repo_root().join("systemd/fossa-agent.service"))
            .unwrap(),
    ));
    let broker_password = url_password(&url);
    let mut secrets = vec![
        ("UI password", pw.as_str()),
        ("broker URL", url.as_str()),
        ("broker password", broker_password.as_str()),
    ];
    // moto's registry token may be a short constant; a real one is long.
    if stack.ecr_password.len() >= 8 {
        secrets.push(("registry token", stack.ecr_password.as_str()));
    }
    assert_absent(&secrets, &places);

    // Second start: nothing changes.
    let agent = stack.agent(&config, "agent-2.log", &[]);
    let noop = agent.wait_log(
        &["is up to date", "cluster up to date", "broker running"],
        Duration::from_secs(60),
    );
    let log2 = agent.log();
    assert!(!log2.contains("building "), "no rebuild: {log2}");
    assert_eq!(revisions(&ecs).await.len(), 1, "no new revision");
    assert_eq!(stack.image_tags().len(), 1);

    // A changed model with its own requirements.txt: exactly one new image
    // and one new revision, after a reload. The smoke test before the push
    // imports the model, so the image holds what requirements.txt names.
    let model = "import ayeaye\nimport six\n\nclass SmallEtl(ayeaye.PartitionedModel):\n    complexity = 2\n";
    std::fs::write(stack.models.join("etl.py"), model).unwrap();
    std::fs::write(stack.models.join("requirements.txt"), "six==1.16.0\n").unwrap();
    let relaunch_and_reload = |agent: &fossa_tests::stack::Agent| {
        let since = agent.log_len();
        stack.relaunch();
        agent.signal("HUP");
        since
    };
    let since = relaunch_and_reload(&agent);
    agent.wait_log_since(
        since,
        &["updated the service to the new revision"],
        Duration::from_secs(180),
    );
    assert_eq!(revisions(&ecs).await.len(), 2);
    assert_eq!(stack.image_tags().len(), 2);

    // Bad input loses nothing: a model that does not import, then a
    // requirement that cannot install. Each is an event naming the file and
    // line or pip's error; nothing is pushed, the service keeps revision 2.
    std::fs::write(
        stack.models.join("bad.py"),
        "import ayeaye\n\ndef broken(:\n",
    )
    .unwrap();
    let since = relaunch_and_reload(&agent);
    agent.wait_log_since(
        since,
        &[
            "was not pushed",
            "File \"/app/models/bad.py\", line 3",
            "SyntaxError",
        ],
        Duration::from_secs(120),
    );
    std::fs::remove_file(stack.models.join("bad.py")).unwrap();
    std::fs::write(
        stack.models.join("requirements.txt"),
        "six==1.16.0\nfossa-no-such-package==9.9.9\n",
    )
    .unwrap();
    let since = relaunch_and_reload(&agent);
    agent.wait_log_since(
        since,
        &[
            "docker build failed",
            "No matching distribution found for fossa-no-such-package==9.9.9",
        ],
        Duration::from_secs(120),
    );
    assert_eq!(stack.image_tags().len(), 2, "nothing pushed for bad input");
    assert_eq!(revisions(&ecs).await.len(), 2, "the service is untouched");
    // Put right, the models are those of revision 2 again: nothing to build.
    std::fs::write(stack.models.join("requirements.txt"), "six==1.16.0\n").unwrap();
    let since = relaunch_and_reload(&agent);
    agent.wait_log_since(since, &["is up to date"], Duration::from_secs(120));
    assert_eq!(stack.image_tags().len(), 2);

    // Whoever can write the bucket but not the stack config (a leaked
    // upload key, a bucket policy gone wrong) replaces the models: the agent
    // refuses an archive whose hash is not the one launch recorded, and
    // builds nothing from it.
    let evil = stack.dir.0.join("evil");
    std::fs::create_dir_all(evil.join("models")).unwrap();
    std::fs::write(
        evil.join("models/evil.py"),
        "import os
os.system('curl http://169.254.169.254/')
",
    )
    .unwrap();
    Run::of(
        Command::new("tar")
            .arg("-czf")
            .arg(evil.join("models.tar.gz"))
            .arg("-C")
            .arg(&evil)
            .arg("models"),
    )
    .ok();
    let config_json = aws_sdk_ssm::Client::new(&stack.sdk)
        .get_parameter()
        .name("/fossa/e2e/config")
        .send()
        .await
        .unwrap();
    let cfg: serde_json::Value =
        serde_json::from_str(config_json.parameter().unwrap().value().unwrap()).unwrap();
    aws_sdk_s3::Client::new(&stack.sdk)
        .put_object()
        .bucket(cfg["bucket"].as_str().unwrap())
        .key(fossa_contract::names::MODELS_OBJECT_KEY)
        .body(std::fs::read(evil.join("models.tar.gz")).unwrap().into())
        .send()
        .await
        .unwrap();
    let since = agent.log_len();
    agent.signal("HUP");
    agent.wait_log_since(
        since,
        &[
            "launch recorded in the stack config",
            cfg["models_sha256"].as_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(
        stack.image_tags().len(),
        2,
        "nothing built from the replaced models"
    );

    // A change to a model file alone reuses every pip layer.
    std::fs::write(stack.models.join("etl.py"), format!("{model}# edited\n")).unwrap();
    let since = relaunch_and_reload(&agent);
    let model_only = agent.wait_log_since(since, &["pushed 127.0.0.1:"], Duration::from_secs(120));
    agent.wait_log_since(
        since,
        &["updated the service to the new revision"],
        Duration::from_secs(60),
    );
    eprintln!("figures: a model-only change was built, smoke-tested and pushed {model_only:?} after relaunch + reload");
    assert_eq!(revisions(&ecs).await.len(), 3);
    assert_eq!(stack.image_tags().len(), 3);
    let svc = ecs
        .describe_services()
        .cluster("fossa-e2e")
        .services("fossa-e2e-workers")
        .send()
        .await
        .unwrap();
    assert!(svc.services()[0].task_definition().unwrap().ends_with(":3"));
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
            .env(fossa_contract::aws::ACTIONS_LOG_ENV, stack.actions_log())
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
    assert_eq!(stack.image_tags().len(), 3, "nothing new was built");
    // What the image holds, layer by layer, beside its base.
    let reference = built.stdout.trim();
    let size_of = |image: &str| {
        Run::of(
            docker
                .cli()
                .args(["image", "inspect", "-f", "{{.Size}}", image]),
        )
        .ok()
        .stdout
        .trim()
        .parse::<f64>()
        .unwrap()
            / 1e6
    };
    eprintln!(
        "figures: worker image {:.0} MB on a {:.0} MB base; its layers:\n{}",
        size_of(reference),
        size_of(&stack.base_image),
        Run::of(docker.cli().args([
            "history",
            "--format",
            "{{.Size}}\t{{.CreatedBy}}",
            reference
        ]))
        .ok()
        .stdout
    );
    eprintln!("figures: first reconcile (build + push + cluster) {first:?}; no-op reconcile after restart {noop:?}");

    // Every AWS action the agent called is one its role's policy allows (the
    // emulator enforces no IAM, so this is where a missing grant shows).
    let actions = stack.assert_agent_actions_allowed();
    eprintln!(
        "figures: the agent called {} IAM actions, each allowed by the gateway policy: {actions:?}",
        actions.len()
    );
    let pairs = stack.assert_execution_role_covers_workers().await;
    eprintln!(
        "figures: {} actions ECS takes for a worker, each allowed on its resource by the execution role",
        pairs.len()
    );

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

/// A registry that takes the push's connection and never answers (the
/// proxy holds every upload): the image duty's push ends after
/// `[timeouts] image_push_quiet_secs` with a red line naming it, the agent
/// answers all the while, and nothing is pushed.
#[tokio::test(flavor = "multi_thread")]
async fn a_push_the_registry_never_answers_ends_at_its_quiet_limit() {
    let stack = Stack::launch("hangpush").await;
    let hung =
        fossa_tests::fault_proxy::FaultProxy::hanging(&stack.registry.address, "/blobs/uploads/");
    let config = stack.config(&["image"]);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("registry = \"{}\"", stack.registry.address),
        &format!("registry = \"{}\"", hung.address),
    );
    std::fs::write(
        &config,
        format!("{text}[timeouts]\nimage_push_quiet_secs = 5\n"),
    )
    .unwrap();
    let agent = stack.agent(&config, "agent-hang.log", &[]);
    let took = agent.wait_log(
        &["docker push made no progress for 5s and was abandoned"],
        Duration::from_secs(300),
    );
    eprintln!("the hung push was abandoned {took:?} after the agent started");
    let http = fossa_tests::agent_client();
    let ui = format!("https://127.0.0.1:{}", stack.ui_port);
    let health = http.get(format!("{ui}/healthz")).send().await.unwrap();
    assert_eq!(
        health.status(),
        200,
        "the agent answers after the hung push"
    );
    let log = agent.stop();
    assert!(!log.contains("pushed 127.0.0.1:"), "{log}");
    assert!(
        stack.image_tags().is_empty(),
        "nothing reached the registry"
    );
}
