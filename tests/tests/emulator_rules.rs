//! The Fargate emulator refuses what AWS refuses, by default, with AWS's
//! words: each rule here is one a first deploy on a real account meets, and
//! each is checked both ways (refused, then taken once the call is right).
//! The images are a static busybox in a scratch image, one recorded as
//! amd64 and one as arm64 (the host could run either: the emulator refuses
//! by the image's record, as Fargate's CPU would by its instructions).
//!
//! - the image's architecture against the task definition's runtimePlatform
//!   (X86_64 when it has none), and the circuit breaker failing that
//!   deployment;
//! - no ARM64 task on FARGATE_SPOT;
//! - a subnet's addresses (5 reserved; a /28 holds 11 tasks);
//! - IAM on every call, both those moto answers and those the emulator
//!   answers itself;
//! - ECS's request throttling (a token bucket per category of actions).

use std::process::Command;
use std::time::Duration;

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, Compatibility,
    ContainerDefinition, CpuArchitecture, NetworkConfiguration, RuntimePlatform, Task,
};
use fossa_tests::docker::{Dockerd, Registry};
use fossa_tests::fargate::{Emulator, Gateway};
use fossa_tests::moto::Moto;
use fossa_tests::{eventually, holds, Run, TempDir};
use sha2::Digest;

const CLUSTER: &str = "rules";

/// A scratch image holding a static busybox, pushed to `registry` as
/// `<registry>/rules/worker:amd64`; and the same image recorded as arm64
/// (its config's `architecture` changed, through the registry's API: this
/// dockerd's `import --platform` needs experimental mode), `:arm64`.
async fn push_images(docker: &Dockerd, registry: &Registry, password: &str) -> (String, String) {
    let dir = TempDir::new("rules-image");
    let root = dir.0.join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for tool in ["sh", "sleep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).unwrap();
    }
    let tar = dir.0.join("root.tar");
    Run::of(
        Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    )
    .ok();
    let amd = format!("{}/rules/worker:amd64", registry.address);
    let config = dir.0.join("docker-config");
    std::fs::create_dir_all(&config).unwrap();
    Run::of(
        docker
            .cli()
            // Exits on SIGTERM, as a task stopped within its stop window.
            .args([
                "import",
                "--change",
                r#"CMD ["sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"]"#,
            ])
            .arg(&tar)
            .arg(&amd),
    )
    .ok();
    let mut login = docker.cli();
    login.env("DOCKER_CONFIG", &config).args([
        "login",
        "-u",
        "AWS",
        "-p",
        password,
        &registry.address,
    ]);
    Run::of(&mut login).ok();
    Run::of(
        docker
            .cli()
            .env("DOCKER_CONFIG", &config)
            .args(["push", &amd]),
    )
    .ok();

    let http = reqwest::Client::new();
    let base = format!("http://{}/v2/rules/worker", registry.address);
    const MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    let mut manifest: serde_json::Value = http
        .get(format!("{base}/manifests/amd64"))
        .basic_auth("AWS", Some(password))
        .header("Accept", MANIFEST)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let digest = manifest["config"]["digest"].as_str().unwrap().to_owned();
    let mut image_config: serde_json::Value = http
        .get(format!("{base}/blobs/{digest}"))
        .basic_auth("AWS", Some(password))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(image_config["architecture"], "amd64", "{image_config}");
    image_config["architecture"] = "arm64".into();
    let blob = image_config.to_string().into_bytes();
    let digest = format!("sha256:{}", hex(&sha2::Sha256::digest(&blob)));
    let upload = http
        .post(format!("{base}/blobs/uploads/"))
        .basic_auth("AWS", Some(password))
        .send()
        .await
        .unwrap();
    let location = upload.headers()["location"].to_str().unwrap().to_owned();
    let location = if location.starts_with("http") {
        location
    } else {
        format!("http://{}{location}", registry.address)
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = http
        .put(format!("{location}{sep}digest={digest}"))
        .basic_auth("AWS", Some(password))
        .header("Content-Type", "application/octet-stream")
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{put:?}");
    manifest["config"]["digest"] = digest.into();
    manifest["config"]["size"] = blob.len().into();
    let put = http
        .put(format!("{base}/manifests/arm64"))
        .basic_auth("AWS", Some(password))
        .header("Content-Type", MANIFEST)
        .body(manifest.to_string())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{put:?}");
    (amd, format!("{}/rules/worker:arm64", registry.address))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn register(
    ecs: &aws_sdk_ecs::Client,
    family: &str,
    image: &str,
    arch: Option<CpuArchitecture>,
) -> String {
    let mut r = ecs
        .register_task_definition()
        .family(family)
        .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .cpu("256")
        .memory("512")
        .container_definitions(
            ContainerDefinition::builder()
                .name("worker")
                .image(image)
                .memory(512)
                .essential(true)
                .build(),
        );
    if let Some(arch) = arch {
        r = r.runtime_platform(RuntimePlatform::builder().cpu_architecture(arch).build());
    }
    let out = r.send().await.unwrap();
    out.task_definition()
        .unwrap()
        .task_definition_arn()
        .unwrap()
        .to_owned()
}

struct Net {
    tiny: String,
    wide: String,
    sg: String,
}

impl Net {
    fn config(&self, subnet: &str) -> NetworkConfiguration {
        NetworkConfiguration::builder()
            .awsvpc_configuration(
                AwsVpcConfiguration::builder()
                    .subnets(subnet)
                    .security_groups(&self.sg)
                    .assign_public_ip(AssignPublicIp::Disabled)
                    .build()
                    .unwrap(),
            )
            .build()
    }
}

/// An ECS client of `sdk` signing with these keys.
fn ecs_as(sdk: &aws_config::SdkConfig, id: &str, secret: &str) -> aws_sdk_ecs::Client {
    aws_sdk_ecs::Client::from_conf(
        aws_sdk_ecs::config::Builder::from(sdk)
            .credentials_provider(aws_sdk_ecs::config::Credentials::new(
                id, secret, None, None, "test",
            ))
            .build(),
    )
}

async fn service_tasks(ecs: &aws_sdk_ecs::Client, service: &str) -> Vec<Task> {
    let mut arns = Vec::new();
    for status in [
        aws_sdk_ecs::types::DesiredStatus::Running,
        aws_sdk_ecs::types::DesiredStatus::Stopped,
    ] {
        let out = ecs
            .list_tasks()
            .cluster(CLUSTER)
            .service_name(service)
            .desired_status(status)
            .send()
            .await
            .unwrap();
        arns.extend(out.task_arns().iter().cloned());
    }
    if arns.is_empty() {
        return Vec::new();
    }
    let out = ecs
        .describe_tasks()
        .cluster(CLUSTER)
        .set_tasks(Some(arns))
        .send()
        .await
        .unwrap();
    out.tasks().to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_emulator_refuses_what_aws_refuses() {
    let gateway = Gateway::new("er");
    let moto = Moto::start_enforcing().await;
    let sdk = moto.sdk().await;
    let password = moto.ecr_password().await;
    let registry = Registry::start_in(&password, Some(&gateway.gw));
    let docker = Dockerd::start_in(Some(&gateway.gw));
    let dir = TempDir::new("rules");
    let emulator = Emulator::start(&moto, &docker, &gateway, &dir.0);
    let (amd, arm) = push_images(&docker, &registry, &password).await;

    // The network: the tasks' addresses are on the gateway's bridge (a /16).
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let vpc = ec2
        .create_vpc()
        .cidr_block("192.168.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_owned();
    let subnet = async |cidr: &str| {
        let s = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(cidr)
            .send()
            .await
            .unwrap();
        s.subnet().unwrap().subnet_id().unwrap().to_owned()
    };
    let tiny = subnet("192.168.20.0/28").await;
    let wide = subnet("192.168.21.0/24").await;
    let sg = ec2
        .create_security_group()
        .group_name("rules tasks")
        .description("the rules test's tasks")
        .vpc_id(&vpc)
        .send()
        .await
        .unwrap();
    let net = Net {
        tiny,
        wide,
        sg: sg.group_id().unwrap().to_owned(),
    };

    let emulated = sdk
        .clone()
        .into_builder()
        .endpoint_url(&emulator.url)
        .build();
    let ecs = aws_sdk_ecs::Client::new(&emulated);
    // ECS's service-linked role, which launch makes (its rule is the
    // whole path's).
    aws_sdk_iam::Client::new(&sdk)
        .create_service_linked_role()
        .aws_service_name("ecs.amazonaws.com")
        .send()
        .await
        .unwrap();
    ecs.create_cluster()
        .cluster_name(CLUSTER)
        .capacity_providers("FARGATE")
        .capacity_providers("FARGATE_SPOT")
        .send()
        .await
        .unwrap();
    let create = |name: &str, td: &str, subnet: &str, count: i32, provider: &str| {
        ecs.create_service()
            .cluster(CLUSTER)
            .service_name(name)
            .task_definition(td)
            .desired_count(count)
            .network_configuration(net.config(subnet))
            .capacity_provider_strategy(
                CapacityProviderStrategyItem::builder()
                    .capacity_provider(provider)
                    .weight(1)
                    .build()
                    .unwrap(),
            )
            // As the agent makes its service: the breaker on, with rollback.
            .deployment_configuration(fossa_agent::duties::cluster::ecs::deployment_configuration())
            .send()
    };

    // 1. An arm64 image in a task definition without runtimePlatform runs
    //    as X86_64: every task exits at once, and the circuit breaker fails
    //    the deployment (a first one: nothing to roll back to).
    let no_platform = register(&ecs, "no-platform", &arm, None).await;
    create("arm-as-x86", &no_platform, &net.wide, 2, "FARGATE")
        .await
        .unwrap();
    let what = "the arm64 image refused on X86_64, the deployment FAILED";
    eventually(what, Duration::from_secs(60), async || {
        let tasks = service_tasks(&ecs, "arm-as-x86").await;
        let exited: Vec<&Task> = tasks
            .iter()
            .filter(|t| t.stop_code().map(|c| c.as_str()) == Some("EssentialContainerExited"))
            .collect();
        let svc = ecs
            .describe_services()
            .cluster(CLUSTER)
            .services("arm-as-x86")
            .send()
            .await
            .unwrap();
        let state = svc.services()[0].deployments()[0]
            .rollout_state()
            .map(|s| s.as_str().to_owned());
        holds(
            exited.len() >= 3
                && exited.iter().all(|t| {
                    t.containers()[0].exit_code() == Some(255)
                        && t.containers()[0]
                            .reason()
                            .is_some_and(|r| r.contains("exec format error"))
                })
                && state.as_deref() == Some("FAILED"),
            || format!("{state:?} {tasks:#?}\n{}", emulator.log()),
        )
    })
    .await;
    // The same image with runtimePlatform ARM64 runs.
    let with_platform = register(&ecs, "arm", &arm, Some(CpuArchitecture::Arm64)).await;
    create("arm", &with_platform, &net.wide, 1, "FARGATE")
        .await
        .unwrap();
    eventually(
        "the arm64 task running on ARM64",
        Duration::from_secs(60),
        async || {
            let tasks = service_tasks(&ecs, "arm").await;
            holds(
                tasks.iter().any(|t| t.last_status() == Some("RUNNING")),
                || format!("{tasks:#?}\n{}", emulator.log()),
            )
        },
    )
    .await;

    // 2. ARM64 tasks are not placed on Fargate Spot.
    create("arm-spot", &with_platform, &net.wide, 1, "FARGATE_SPOT")
        .await
        .unwrap();
    eventually(
        "ARM64 on Spot not placed",
        Duration::from_secs(30),
        async || {
            let svc = ecs
                .describe_services()
                .cluster(CLUSTER)
                .services("arm-spot")
                .send()
                .await
                .unwrap();
            let events: Vec<String> = svc.services()[0]
                .events()
                .iter()
                .filter_map(|e| e.message().map(str::to_owned))
                .collect();
            let tasks = service_tasks(&ecs, "arm-spot").await;
            holds(
                tasks.is_empty()
                    && events
                        .iter()
                        .any(|e| e.contains("unable to place a task") && e.contains("ARM64")),
                || format!("{events:?} {tasks:?}"),
            )
        },
    )
    .await;

    // 3. A /28 holds 11 tasks (16 less AWS's 5): the 12th gets no address.
    let x86 = register(&ecs, "x86", &amd, Some(CpuArchitecture::X8664)).await;
    create("many", &x86, &net.tiny, 12, "FARGATE")
        .await
        .unwrap();
    eventually(
        "11 running and the 12th without an address",
        Duration::from_secs(120),
        async || {
            let tasks = service_tasks(&ecs, "many").await;
            let running: Vec<&Task> = tasks
                .iter()
                .filter(|t| t.last_status() == Some("RUNNING"))
                .collect();
            let no_address = tasks.iter().any(|t| {
                t.stop_code().map(|c| c.as_str()) == Some("TaskFailedToStart")
                    && t.stopped_reason()
                        .is_some_and(|r| r.contains("InsufficientFreeAddressesInSubnet"))
            });
            holds(running.len() == 11 && no_address, || {
                format!(
                    "{} running, no address: {no_address}\n{}",
                    running.len(),
                    emulator.log()
                )
            })
        },
    )
    .await;
    let tasks = service_tasks(&ecs, "many").await;
    let mut addresses: Vec<String> = tasks
        .iter()
        .filter(|t| t.last_status() == Some("RUNNING"))
        .flat_map(|t| t.attachments()[0].details().to_vec())
        .filter(|d| d.name() == Some("privateIPv4Address"))
        .filter_map(|d| d.value().map(str::to_owned))
        .collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 11, "one address each: {addresses:?}");
    for a in &addresses {
        let host: u8 = a.rsplit('.').next().unwrap().parse().unwrap();
        assert!(
            (4..=14).contains(&host),
            "{a}: AWS keeps .0-.3 and .15 of a /28"
        );
    }

    // 4. IAM on every call: a user allowed only DescribeServices is refused
    //    ListTasks (answered by the emulator) and ListServices (by moto),
    //    and is not refused what it may do.
    let iam = aws_sdk_iam::Client::new(&sdk);
    iam.create_user().user_name("reader").send().await.unwrap();
    iam.put_user_policy()
        .user_name("reader")
        .policy_name("describe")
        .policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecs:DescribeServices","Resource":"*"}]}"#,
        )
        .send()
        .await
        .unwrap();
    let key = iam
        .create_access_key()
        .user_name("reader")
        .send()
        .await
        .unwrap();
    let key = key.access_key().unwrap();
    let reader = ecs_as(&emulated, key.access_key_id(), key.secret_access_key());
    reader
        .describe_services()
        .cluster(CLUSTER)
        .services("many")
        .send()
        .await
        .expect("DescribeServices is allowed");
    let refused = reader
        .list_tasks()
        .cluster(CLUSTER)
        .send()
        .await
        .unwrap_err();
    let refused = format!("{:?}", aws_sdk_ecs::error::DisplayErrorContext(refused));
    assert!(
        refused.contains("AccessDenied") && refused.contains("ecs:ListTasks"),
        "{refused}"
    );
    let refused = reader
        .list_services()
        .cluster(CLUSTER)
        .send()
        .await
        .unwrap_err();
    let refused = format!("{:?}", aws_sdk_ecs::error::DisplayErrorContext(refused));
    assert!(refused.contains("ecs:ListServices"), "{refused}");

    // A user made like a role (as the whole path makes the agent's) holds
    // that role's documents and nothing more.
    iam.create_role()
        .role_name("lister")
        .assume_role_policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#,
        )
        .send()
        .await
        .unwrap();
    iam.put_role_policy()
        .role_name("lister")
        .policy_name("list")
        .policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ecs:ListClusters"],"Resource":"arn:aws:ecs:eu-west-2:123456789012:cluster/*"}]}"#,
        )
        .send()
        .await
        .unwrap();
    let keys = moto.user_like_role("lister", "lister-as-user").await;
    let lister = ecs_as(&emulated, &keys.id, &keys.secret);
    lister
        .list_clusters()
        .send()
        .await
        .expect("the role's one action");
    let refused = lister
        .list_services()
        .cluster(CLUSTER)
        .send()
        .await
        .unwrap_err();
    let refused = format!("{:?}", aws_sdk_ecs::error::DisplayErrorContext(refused));
    assert!(refused.contains("ecs:ListServices"), "{refused}");

    // 5. ECS's request throttling: a burst of 200 ListTasks (a bucket of
    //    100, refilled at 20 a second) without the SDK's retries is partly
    //    refused with ThrottlingException; the SDK's standard retries ride
    //    the same bucket out.
    let bare = aws_sdk_ecs::Client::from_conf(
        aws_sdk_ecs::config::Builder::from(&emulated)
            .retry_config(aws_sdk_ecs::config::retry::RetryConfig::disabled())
            .build(),
    );
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let call = bare.list_tasks().cluster(CLUSTER);
        calls.spawn(call.send());
    }
    let results = calls.join_all().await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let throttled: Vec<String> = results
        .into_iter()
        .filter_map(Result::err)
        .map(|e| format!("{:?}", aws_sdk_ecs::error::DisplayErrorContext(e)))
        .collect();
    assert!((100..200).contains(&ok), "{ok} of 200 passed");
    assert!(
        throttled
            .iter()
            .all(|e| e.contains("ThrottlingException") && e.contains("Rate exceeded")),
        "{throttled:?}"
    );
    eprintln!(
        "FIGURE a burst of 200 ListTasks: {ok} answered, {} throttled",
        throttled.len()
    );
    for _ in 0..5 {
        ecs.list_tasks()
            .cluster(CLUSTER)
            .send()
            .await
            .expect("the SDK's retries wait for the bucket");
    }
}

/// S3's bucket owner condition, which moto ignores and our moto wrapper
/// enforces as AWS does: the agent names the stack's account on every read
/// and write of the bucket (models, its own binary, the lease), so a bucket
/// of the same name in another account (deleted and taken over) is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_of_another_account_is_refused() {
    let moto = Moto::start();
    let sdk = moto.sdk().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let bucket = "fossa-owner-test";
    s3.create_bucket()
        .bucket(bucket)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(fossa_tests::moto::REGION.into())
                .build(),
        )
        .send()
        .await
        .unwrap();
    s3.put_object()
        .bucket(bucket)
        .key(fossa_contract::names::MODELS_OBJECT_KEY)
        .body(b"not a tarball".to_vec().into())
        .send()
        .await
        .unwrap();
    let account = fossa_tests::moto::ACCOUNT;
    let ours = s3
        .head_object()
        .bucket(bucket)
        .expected_bucket_owner(account)
        .key(fossa_contract::names::MODELS_OBJECT_KEY)
        .send()
        .await;
    assert!(ours.is_ok(), "{ours:?}");
    // The agent's models download, told the stack is another account's.
    let mut cache = fossa_agent::duties::image::ModelsCache::default();
    let e = cache
        .load(&s3, bucket, "999999999999", true, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("403") || e.contains("AccessDenied") || e.contains("Forbidden"),
        "{e}"
    );
}
