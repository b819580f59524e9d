//! `fossa-bootstrap` against a real moto_server: launch creates exactly the
//! stack, a re-run creates nothing, a launch killed after any step is finished
//! by running it again, and destroy leaves nothing (bad input: bootstrap_input.rs).

use fossa_tests::bootstrap::{bootstrap, launch, launch_allowing, ALLOW};
use fossa_tests::moto::Moto;
use fossa_tests::{Run, TempDir};

fn step_lines(stderr: &str, word: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| {
            l.starts_with('[')
                && l.split_once(']')
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    == Some(word)
        })
        .map(str::to_owned)
        .collect()
}

fn tag_filter(stack: &str) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder()
        .name("tag:fossa:stack")
        .values(stack)
        .build()
}

#[tokio::test(flavor = "multi_thread")]
async fn launch_creates_the_stack_and_rerun_creates_nothing() {
    let moto = Moto::start();
    let models = TempDir::new("models");
    std::fs::write(models.0.join("my_model.py"), "class MyEtl: pass\n").unwrap();
    let first = Run::of(launch(
        &moto,
        "t1",
        &["--models", models.0.to_str().unwrap(), "--workers", "3"],
    ))
    .ok();
    assert!(first.stdout.contains("https://"), "{}", first.stdout);
    assert!(
        step_lines(&first.stderr, "created").len() >= 15,
        "{}",
        first.stderr
    );
    assert!(
        first.stderr.contains("dynamically linked"),
        "a dynamic agent is warned about: {}",
        first.stderr
    );
    // moto has no Fargate quotas: said, and the launch goes on.
    assert!(
        first
            .stderr
            .contains("the Fargate vCPU quota could not be read, so it is not checked"),
        "{}",
        first.stderr
    );

    let sdk = moto.sdk().await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let vpcs = ec2
        .describe_vpcs()
        .filters(tag_filter("t1"))
        .send()
        .await
        .unwrap();
    assert_eq!(vpcs.vpcs().len(), 1);
    let vpc = &vpcs.vpcs()[0];
    assert_eq!(vpc.cidr_block(), Some("192.168.0.0/16"));
    let vpc_id = vpc.vpc_id().unwrap();
    let dns = ec2
        .describe_vpc_attribute()
        .vpc_id(vpc_id)
        .attribute(aws_sdk_ec2::types::VpcAttributeName::EnableDnsHostnames)
        .send()
        .await
        .unwrap();
    assert_eq!(dns.enable_dns_hostnames().unwrap().value(), Some(true));

    let subnets = ec2
        .describe_subnets()
        .filters(tag_filter("t1"))
        .send()
        .await
        .unwrap();
    let mut cidrs: Vec<_> = subnets
        .subnets()
        .iter()
        .map(|s| {
            (
                s.cidr_block().unwrap().to_owned(),
                s.availability_zone().unwrap().to_owned(),
                s.map_public_ip_on_launch(),
            )
        })
        .collect();
    cidrs.sort();
    assert_eq!(
        cidrs.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
        ["192.168.1.0/24", "192.168.4.0/22", "192.168.8.0/22"],
        "private /22s: room for 1,000 workers with a deployment's surge"
    );
    assert_ne!(cidrs[1].1, cidrs[2].1, "private subnets are in two AZs");
    assert_eq!(cidrs[0].2, Some(true), "public subnet maps public IPs");

    // The gateway: an Auto Scaling group of one running the launch
    // template, which holds what every replacement boots with.
    let asg = aws_sdk_autoscaling::Client::new(&sdk);
    let groups = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names("fossa-t1-gateway")
        .send()
        .await
        .unwrap();
    let group = &groups.auto_scaling_groups()[0];
    assert_eq!(
        (group.min_size(), group.max_size(), group.desired_capacity()),
        (Some(1), Some(1), Some(1)),
        "a group of one"
    );
    assert_eq!(group.instances().len(), 1);
    assert_eq!(group.health_check_type(), Some("EC2"));
    let public_subnet = subnets
        .subnets()
        .iter()
        .find(|s| s.cidr_block() == Some("192.168.1.0/24"))
        .unwrap();
    assert_eq!(
        group.vpc_zone_identifier(),
        public_subnet.subnet_id(),
        "in the public subnet: the lasting parts' zone"
    );
    let versions = ec2
        .describe_launch_template_versions()
        .launch_template_name("fossa-t1-gateway")
        .versions("$Default")
        .send()
        .await
        .unwrap();
    let t = versions.launch_template_versions()[0]
        .launch_template_data()
        .unwrap();
    assert_eq!(
        t.metadata_options()
            .and_then(|m| m.http_tokens())
            .map(|t| t.as_str()),
        Some("required")
    );
    assert_eq!(
        t.metadata_options()
            .and_then(|m| m.http_put_response_hop_limit()),
        Some(1)
    );
    assert!(t.key_name().is_none(), "no key pair");
    // The root volume holds the images: sized and encrypted, not the AMI's 8 GiB.
    let root = t
        .block_device_mappings()
        .iter()
        .find(|m| m.device_name() == Some(fossa_contract::limits::ROOT_DEVICE))
        .and_then(|m| m.ebs())
        .expect("a root volume");
    assert_eq!(
        root.volume_size(),
        Some(fossa_contract::limits::ROOT_VOLUME_GIB)
    );
    assert_eq!(root.encrypted(), Some(true));
    assert_eq!(
        t.iam_instance_profile().and_then(|p| p.name()),
        Some("fossa-t1-gateway")
    );
    let ud = aws_smithy_types_decode(t.user_data().unwrap());
    assert!(ud.len() < 16 * 1024);
    assert!(ud.contains("systemctl enable --now fossa-agent") && ud.contains("Type=notify"));
    // What outlives the instance: the interface (forwarding, so no
    // source/dest check), the Elastic IP and the encrypted data volume in
    // the public subnet's zone, each named in user-data's take-over.
    let enis = ec2
        .describe_network_interfaces()
        .filters(tag_filter("t1"))
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:fossa:role")
                .values("gateway-interface")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(enis.network_interfaces().len(), 1);
    let lasting = &enis.network_interfaces()[0];
    assert_eq!(lasting.source_dest_check(), Some(false));
    assert_eq!(lasting.subnet_id(), public_subnet.subnet_id());
    let eni = lasting.network_interface_id().unwrap();
    assert!(ud.contains(&format!("NetworkInterfaceId={eni}")));
    assert!(
        ud.contains(&format!(
            "broker_address = \"{}\"",
            lasting.private_ip_address().unwrap()
        )),
        "the broker is on the lasting interface's address"
    );
    let vols = ec2
        .describe_volumes()
        .filters(tag_filter("t1"))
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:fossa:role")
                .values("gateway-data")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(vols.volumes().len(), 1);
    let data = &vols.volumes()[0];
    assert_eq!(data.encrypted(), Some(true));
    assert_eq!(data.size(), Some(fossa_contract::limits::DATA_VOLUME_GIB));
    assert_eq!(data.availability_zone(), public_subnet.availability_zone());
    assert!(ud.contains(&format!("VolumeId={}", data.volume_id().unwrap())));
    let eips = ec2
        .describe_addresses()
        .filters(tag_filter("t1"))
        .send()
        .await
        .unwrap();
    assert_eq!(eips.addresses().len(), 1);
    assert!(ud.contains(&format!(
        "AllocationId={}",
        eips.addresses()[0].allocation_id().unwrap()
    )));

    // Private route table sends the default route to the gateway's ENI; public to the IGW.
    let rts = ec2
        .describe_route_tables()
        .filters(tag_filter("t1"))
        .send()
        .await
        .unwrap();
    assert_eq!(rts.route_tables().len(), 2);
    let private = rts
        .route_tables()
        .iter()
        .find(|t| t.tags().iter().any(|t| t.value() == Some("private")))
        .unwrap();
    assert!(private
        .routes()
        .iter()
        .any(|r| r.destination_cidr_block() == Some("0.0.0.0/0")
            && r.network_interface_id() == Some(eni)));
    assert_eq!(private.associations().len(), 2);

    // Security groups: UI only from --allow-cidr, no SSH, tasks only from the gateway.
    let sgs = ec2
        .describe_security_groups()
        .filters(tag_filter("t1"))
        .send()
        .await
        .unwrap();
    assert_eq!(sgs.security_groups().len(), 2);
    let gw = sgs
        .security_groups()
        .iter()
        .find(|g| g.group_name() == Some("fossa-t1-gateway"))
        .unwrap();
    let task = sgs
        .security_groups()
        .iter()
        .find(|g| g.group_name() == Some("fossa-t1-tasks"))
        .unwrap();
    for g in [gw, task] {
        for p in g.ip_permissions() {
            assert_ne!(p.from_port(), Some(22));
            assert!(p
                .ip_ranges()
                .iter()
                .all(|r| r.cidr_ip() != Some("0.0.0.0/0")));
        }
    }
    let ui = gw
        .ip_permissions()
        .iter()
        .find(|p| p.from_port() == Some(443))
        .unwrap();
    assert_eq!(ui.ip_ranges()[0].cidr_ip(), Some(ALLOW));
    let fossa = task
        .ip_permissions()
        .iter()
        .find(|p| p.from_port() == Some(2345))
        .unwrap();
    assert_eq!(fossa.user_id_group_pairs()[0].group_id(), gw.group_id());

    // IAM: roles with scoped inline policies, the profile, no managed policy.
    let iam = aws_sdk_iam::Client::new(&sdk);
    for role in [
        "fossa-t1-gateway",
        "fossa-t1-task-execution",
        "fossa-t1-task",
    ] {
        iam.get_role()
            .role_name(role)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{role}: {e:?}"));
    }
    let attached = iam
        .list_attached_role_policies()
        .role_name("fossa-t1-gateway")
        .send()
        .await
        .unwrap();
    assert!(
        attached.attached_policies().is_empty(),
        "no managed policy (AmazonSSMManagedInstanceCore read every parameter): {attached:?}"
    );
    let inline = iam
        .list_role_policies()
        .role_name("fossa-t1-task")
        .send()
        .await
        .unwrap();
    assert!(inline.policy_names().is_empty(), "the task role is empty");

    // SSM: config, agent hash, and a SecureString password not in user-data.
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let cfg = moto.stack_config("t1").await;
    assert_eq!(cfg.workers, 3);
    assert!(cfg.has_models);
    assert_eq!(cfg.private_subnets.len(), 2);
    let pw = ssm
        .get_parameter()
        .name("/fossa/t1/ui-password")
        .with_decryption(true)
        .send()
        .await
        .unwrap();
    let pw = pw.parameter().unwrap();
    assert_eq!(pw.r#type().map(|t| t.as_str()), Some("SecureString"));
    let password = pw.value().unwrap();
    assert!(password.len() >= 20);
    assert!(!ud.contains(password), "the password is not in user-data");
    let printed = Run::of(bootstrap(&moto, &["password", "--stack", "t1"])).ok();
    assert_eq!(printed.stdout.trim(), password);

    // S3: the agent and the models, each with its hash.
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let objects = s3
        .list_objects_v2()
        .bucket(&cfg.bucket)
        .send()
        .await
        .unwrap();
    let mut keys: Vec<_> = objects.contents().iter().filter_map(|o| o.key()).collect();
    keys.sort();
    assert_eq!(keys, ["agent/fossa-agent", "models/models.tar.gz"]);

    // A second launch only reads.
    let second = Run::of(launch(
        &moto,
        "t1",
        &["--models", models.0.to_str().unwrap(), "--workers", "3"],
    ))
    .ok();
    let changed: Vec<_> = step_lines(&second.stderr, "created")
        .into_iter()
        .chain(step_lines(&second.stderr, "updated"))
        .collect();
    assert!(
        changed.is_empty(),
        "re-run changed: {changed:?}\n{}",
        second.stderr
    );
    // Day two: a stack made by an earlier version (the managed policy
    // attached) and a new --allow-cidr. The re-run detaches the policy and
    // swaps the UI rule; without --allow-cidr it keeps the rule it finds.
    iam.attach_role_policy()
        .role_name("fossa-t1-gateway")
        .policy_arn("arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore")
        .send()
        .await
        .unwrap();
    let models_arg = ["--models", models.0.to_str().unwrap(), "--workers", "3"];
    let moved = Run::of(launch_allowing(
        &moto,
        "t1",
        Some("198.51.100.0/24"),
        &models_arg,
    ))
    .ok();
    assert!(
        moved.stderr.contains("UI open to 198.51.100.0/24"),
        "{}",
        moved.stderr
    );
    let attached = iam
        .list_attached_role_policies()
        .role_name("fossa-t1-gateway")
        .send()
        .await
        .unwrap();
    assert!(attached.attached_policies().is_empty(), "{attached:?}");
    let kept = Run::of(launch_allowing(&moto, "t1", None, &models_arg)).ok();
    assert!(
        kept.stderr.contains("UI open to 198.51.100.0/24"),
        "{}",
        kept.stderr
    );
    let gw_rules = ec2
        .describe_security_groups()
        .group_ids(gw.group_id().unwrap())
        .send()
        .await
        .unwrap();
    let ui_cidrs: Vec<_> = gw_rules.security_groups()[0]
        .ip_permissions()
        .iter()
        .filter(|p| p.from_port() == Some(443))
        .flat_map(|p| p.ip_ranges())
        .filter_map(|r| r.cidr_ip())
        .collect();
    assert_eq!(
        ui_cidrs,
        ["198.51.100.0/24"],
        "the old --allow-cidr is revoked"
    );

    let again = ssm
        .get_parameter()
        .name("/fossa/t1/ui-password")
        .with_decryption(true)
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.parameter().unwrap().value(),
        Some(password),
        "the password is kept"
    );

    let status = Run::of(bootstrap(
        &moto,
        &["status", "--stack", "t1", "--output", "json"],
    ))
    .ok();
    let doc: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert!(
        doc["resources"].as_array().unwrap().len() >= 15,
        "{}",
        status.stdout
    );

    // What the agent creates later is destroyed too.
    let ecs = aws_sdk_ecs::Client::new(&sdk);
    ecs.create_cluster()
        .cluster_name("fossa-t1")
        .send()
        .await
        .unwrap();
    ecs.register_task_definition()
        .family("fossa-t1-worker")
        .requires_compatibilities(aws_sdk_ecs::types::Compatibility::Fargate)
        .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
        .cpu("256")
        .memory("512")
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name("fossa")
                .image("x")
                .memory(512)
                .build(),
        )
        .send()
        .await
        .unwrap();
    ecs.create_service()
        .cluster("fossa-t1")
        .service_name("fossa-t1-workers")
        .task_definition("fossa-t1-worker")
        .desired_count(1)
        .send()
        .await
        .unwrap();
    aws_sdk_ecr::Client::new(&sdk)
        .create_repository()
        .repository_name("fossa-t1/worker")
        .send()
        .await
        .unwrap();
    aws_sdk_cloudwatchlogs::Client::new(&sdk)
        .create_log_group()
        .log_group_name("/fossa/t1/workers")
        .send()
        .await
        .unwrap();
    ssm.put_parameter()
        .name("/fossa/t1/broker-url")
        .value("amqp://u:p@10.0.0.1:5672")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();

    let refused =
        Run::of(bootstrap(&moto, &["destroy", "--stack", "t1"]).stdin(std::process::Stdio::null()));
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);

    let destroyed = Run::of(bootstrap(&moto, &["destroy", "--stack", "t1", "--yes"])).ok();
    assert!(
        destroyed.stdout.contains("nothing left"),
        "{}\n{}",
        destroyed.stdout,
        destroyed.stderr
    );
    assert!(ec2
        .describe_vpcs()
        .filters(tag_filter("t1"))
        .send()
        .await
        .unwrap()
        .vpcs()
        .is_empty());
    assert!(iam
        .get_role()
        .role_name("fossa-t1-gateway")
        .send()
        .await
        .is_err());
    assert!(ssm
        .get_parameters_by_path()
        .path("/fossa/t1/")
        .recursive(true)
        .send()
        .await
        .unwrap()
        .parameters()
        .is_empty());
    assert!(s3.head_bucket().bucket(&cfg.bucket).send().await.is_err());
    let status = Run::of(bootstrap(&moto, &["status", "--stack", "t1"]));
    assert_ne!(status.code, 0);
    assert!(
        status.stderr.contains("does not exist"),
        "{}",
        status.stderr
    );
    let again = Run::of(bootstrap(&moto, &["destroy", "--stack", "t1", "--yes"])).ok();
    assert!(
        again.stdout.contains("nothing to destroy"),
        "{}",
        again.stdout
    );
}

fn aws_smithy_types_decode(b64: &str) -> String {
    let bytes = aws_smithy_types_base64(b64);
    String::from_utf8(bytes).unwrap()
}

fn aws_smithy_types_base64(s: &str) -> Vec<u8> {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()) {
        buf = (buf << 6) | T.iter().position(|t| *t == c).expect("base64") as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn launch_killed_after_each_step_is_finished_by_a_rerun() {
    let moto = Moto::start();
    let mut step = 1;
    loop {
        let r = Run::of(
            launch(&moto, "t2", &[]).env(fossa_contract::fault::EXIT_AT, format!("step-{step}")),
        );
        if r.code == 0 {
            break;
        }
        assert_eq!(r.code, 137, "step {step}: {}", r.stderr);
        step += 1;
        assert!(step < 40, "launch never completed");
    }
    assert!(step > 15, "launch has more steps than {step}");
    let done = Run::of(&mut launch(&moto, "t2", &[])).ok();
    assert!(
        step_lines(&done.stderr, "created").is_empty(),
        "{}",
        done.stderr
    );
    let sdk = moto.sdk().await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    assert_eq!(
        ec2.describe_vpcs()
            .filters(tag_filter("t2"))
            .send()
            .await
            .unwrap()
            .vpcs()
            .len(),
        1
    );
    assert_eq!(
        ec2.describe_subnets()
            .filters(tag_filter("t2"))
            .send()
            .await
            .unwrap()
            .subnets()
            .len(),
        3
    );
    assert_eq!(
        ec2.describe_security_groups()
            .filters(tag_filter("t2"))
            .send()
            .await
            .unwrap()
            .security_groups()
            .len(),
        2
    );
    let inst = ec2
        .describe_instances()
        .filters(tag_filter("t2"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        inst.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .count(),
        1
    );
    Run::of(bootstrap(&moto, &["destroy", "--stack", "t2", "--yes"])).ok();
    assert!(ec2
        .describe_vpcs()
        .filters(tag_filter("t2"))
        .send()
        .await
        .unwrap()
        .vpcs()
        .is_empty());
}

/// User-data's agent fetch, as EC2 holds it, run against a metadata service
/// stand-in and a moto that enforces IAM: it signs its GET with the
/// instance role's credentials (the role as `launch` made it), gets exactly
/// the agent `launch` uploaded, and holds no URL, signature or key of the
/// launcher's. Another role's credentials are refused, and the keys show in
/// neither the output nor curl's command line.
#[tokio::test(flavor = "multi_thread")]
async fn user_data_fetches_the_agent_with_the_instance_role() {
    let moto = Moto::start_enforcing().await;
    Run::of(launch(&moto, "ud", &[])).ok();
    let ud = fossa_tests::bootstrap::user_data(&moto.sdk().await, "ud").await;
    for word in ["X-Amz-Signature", "X-Amz-Credential", &moto.keys.id] {
        assert!(!ud.contains(word), "user-data holds {word:?}");
    }
    let queries: Vec<&str> = ud
        .lines()
        .filter(|l| l.split("://").nth(1).is_some_and(|rest| rest.contains('?')))
        .collect();
    assert!(
        queries.is_empty(),
        "user-data holds a URL with a query: {queries:?}"
    );
    let fetch = ud
        .split("# fossa:fetch-agent begin\n")
        .nth(1)
        .and_then(|s| s.split("# fossa:fetch-agent end").next())
        .expect("user-data's fetch section");
    let stack = fossa_contract::StackName::new("ud").unwrap();
    let role = stack.gateway_role();
    let profile = stack.instance_profile();
    assert!(fetch.contains(&profile), "names the profile: {fetch}");

    let run_fetch = |(keys, token): &(fossa_tests::moto::Keys, String), out: &std::path::Path| {
        let mut imds = std::process::Command::new(fossa_tests::venv_bin("python"))
            .arg(fossa_tests::repo_root().join("tests/support/imds.py"))
            .env("FOSSA_IMDS_ROLE", &role)
            .env("FOSSA_IMDS_KEY_ID", &keys.id)
            .env("FOSSA_IMDS_SECRET", &keys.secret)
            .env("FOSSA_IMDS_TOKEN", token)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut port = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(imds.stdout.as_mut().unwrap()),
            &mut port,
        )
        .unwrap();
        let script = fetch.replace(
            "http://169.254.169.254",
            &format!("http://127.0.0.1:{}", port.trim()),
        );
        // A curl that records its command line, then runs the real one.
        let shim = out.with_extension("bin");
        std::fs::create_dir_all(&shim).unwrap();
        let argv = out.with_extension("argv");
        std::fs::write(
            shim.join("curl"),
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$*\" >> {}\nexec /usr/bin/curl \"$@\"\n",
                argv.display()
            ),
        )
        .unwrap();
        Run::of(
            std::process::Command::new("chmod")
                .arg("+x")
                .arg(shim.join("curl")),
        )
        .ok();
        let path = format!("{}:{}", shim.display(), std::env::var("PATH").unwrap());
        let run = Run::of(
            std::process::Command::new("bash")
                .env("PATH", path)
                .arg("-c")
                .arg(format!("set -euo pipefail\n{script}\nfetch_agent \"$1\""))
                .arg("fetch")
                .arg(out),
        );
        let _ = imds.kill();
        let log = imds.wait_with_output().unwrap();
        let argv = std::fs::read_to_string(&argv).unwrap_or_default();
        assert!(argv.contains("-K -"), "curl ran: {argv}");
        assert!(
            !argv.contains(&keys.secret) && !argv.contains(&keys.id),
            "a key is on curl's command line: {argv}"
        );
        (run, String::from_utf8_lossy(&log.stderr).into_owned())
    };

    // The instance's own role.
    let session = moto.session_like_role(&role, &format!("{role}-copy")).await;
    let keys = &session.0;
    let dir = TempDir::new("ud-fetch");
    let out = dir.0.join("fossa-agent");
    let (run, imds_log) = run_fetch(&session, &out);
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, imds_log);
    assert!(
        imds_log.contains("PUT /latest/api/token"),
        "IMDSv2: {imds_log}"
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(fossa_tests::bin("fossa-agent")).unwrap(),
        "the agent fetched is the one launch uploaded"
    );
    for text in [&run.stdout, &run.stderr] {
        assert!(!text.contains(&keys.secret), "the secret shows: {text}");
    }

    // Another role's credentials (the workers' execution role): refused, said.
    let exec = stack.execution_role();
    let other = moto.session_like_role(&exec, &format!("{exec}-copy")).await;
    let denied = dir.0.join("denied");
    let (run, _) = run_fetch(&other, &denied);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(run.stderr.contains("403"), "{}", run.stderr);
    assert!(!run.stderr.contains(&other.0.secret), "{}", run.stderr);
}
