//! The whole AWS path with real parts: `launch` against moto, the agent in a
//! gateway namespace with its NAT live, a real dockerd, the registry with the
//! ECR token and the real RabbitMQ broker; the Fargate emulator runs the
//! service's tasks as containers of the built image, each in its own network
//! namespace whose only way out is the gateway. Driven through the UI in
//! Chromium where a person would use it.

use std::time::{Duration, Instant};

use fossa_tests::browser::Browser;
use fossa_tests::fargate::{Attacker, Gateway, ATTACKER_PORT, INTERNET_PORT};
use fossa_tests::netns::{GATEWAY_OUTER, INTERNET};
use fossa_tests::stack::Stack;
use fossa_tests::{eventually, holds, Run};

/// A partitioned model whose subtasks say which code and which container ran them.
fn model(version: &str) -> String {
    format!(
        r#"import socket
import time
import urllib.request

import ayeaye

VERSION = "{version}"


class SpreadEtl(ayeaye.PartitionedModel):
    """Eight subtasks of 2 s each, answering with the code's version and the worker's host."""

    def build(self):
        self.log(f"spread {{VERSION}} finished")

    def partition_slice(self, workers_count):
        return [("work", {{"n": n}}) for n in range(8)]

    def work(self, n):
        time.sleep(2)
        return {{"n": n, "version": VERSION, "host": socket.gethostname()}}

    def partition_subtask_complete(self, task_message):
        self.log(f"subtask finished: {{getattr(task_message, 'return_value', None)}}")


class BurstEtl(ayeaye.PartitionedModel):
    """Forty subtasks: 39 of 1 s, then one of 75 s that is still running when the fleet scales in."""

    def build(self):
        self.log("burst finished")

    def partition_slice(self, workers_count):
        return [("work", {{"n": n}}) for n in range(40)]

    def work(self, n):
        time.sleep(75 if n == 39 else 1)
        return {{"n": n, "host": socket.gethostname()}}


class ScaleEtl(ayeaye.PartitionedModel):
    """{SCALE_SUBTASKS} subtasks of {SCALE_WORK_SECS} s, each writing its own output (a request to the
    internet host's server, as an ETL writes to a bucket); the parent reports each completion it counts."""

    def build(self):
        self.log("scale finished")

    def partition_plea(self):
        # Up to every slot of the fleet at once (ayeaye's default is 16).
        return ayeaye.PartitionedModel.PartitionOption(minimum=1, maximum=128, optimal=128)

    def partition_slice(self, workers_count):
        return [("work", {{"n": n}}) for n in range({SCALE_SUBTASKS})]

    def work(self, n):
        time.sleep({SCALE_WORK_SECS})
        urllib.request.urlopen(f"{sink}/output/{{n}}?host={{socket.gethostname()}}", timeout=30).read()
        return {{"n": n}}

    def partition_subtask_complete(self, task_message):
        value = getattr(task_message, "return_value", None) or {{}}
        urllib.request.urlopen(f"{sink}/completion/{{value.get('n')}}", timeout=30).read()
"#,
        sink = format!("http://{INTERNET}:{ATTACKER_PORT}")
    )
}

/// The stack's SecureString `key` from SSM, as `fossa-bootstrap password` reads it.
async fn secret(stack: &Stack, key: &str) -> String {
    let ssm = aws_sdk_ssm::Client::new(&stack.sdk);
    let p = ssm
        .get_parameter()
        .name(format!("/fossa/{}/{key}", stack.name))
        .with_decryption(true)
        .send()
        .await
        .unwrap();
    p.parameter().unwrap().value().unwrap().to_owned()
}

async fn ui_password(stack: &Stack) -> String {
    secret(stack, fossa_contract::ssm::UI_PASSWORD).await
}

/// What a Prometheus scraper gets on the emulator: with the scraper's
/// token from SSM (made by launch), text promtool accepts, with the NAT's
/// counters and the tasks run so far; the same token opens nothing else.
async fn scrape_with_the_token(stack: &Stack, ui: &str) {
    let token = secret(stack, fossa_contract::ssm::METRICS_TOKEN).await;
    let http = fossa_tests::agent_client();
    let get = |path: &str| http.get(format!("{ui}{path}")).bearer_auth(&token).send();
    let r = get("/metrics").await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    fossa_tests::prometheus::check_metrics(&text)
        .unwrap_or_else(|said| panic!("promtool: {said}\n{text}"));
    let sample = |series: &str| fossa_tests::prometheus::sample(&text, series);
    assert!(
        sample("fossa_nat_forwarded_packets_total").is_some_and(|n| n > 0.0),
        "{text}"
    );
    assert!(
        sample("fossa_nat_conntrack_entries_limit").is_some(),
        "{text}"
    );
    assert!(
        sample("fossa_tasks_completed_total{kind=\"task\"}").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    let r = get("/api/v1/overview").await.unwrap();
    assert_eq!(r.status(), 401, "the scraper's token opens /metrics only");
}

/// `GET path` of the agent's API as JSON (`Null` when it does not answer 200).
async fn get_api(stack: &Stack, pw: &str, path: &str) -> serde_json::Value {
    let http = fossa_tests::agent_client();
    match http
        .get(format!("https://127.0.0.1:{}{path}", stack.ui_port))
        .basic_auth("fossa", Some(pw))
        .send()
        .await
    {
        Ok(r) if r.status() == 200 => r.json().await.unwrap_or_default(),
        _ => serde_json::Value::Null,
    }
}

async fn overview(stack: &Stack, pw: &str) -> serde_json::Value {
    get_api(stack, pw, "/api/v1/overview").await
}

/// Workers the UI lists as RUNNING and answering, with their addresses.
fn answering(o: &serde_json::Value) -> Vec<(String, String)> {
    o["workers"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .filter(|w| w["status"] == "RUNNING" && w["health"] == "ok")
                .map(|w| {
                    (
                        w["id"].as_str().unwrap_or_default().to_owned(),
                        w["address"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until exactly `n` workers answer and `accept` holds; returns the overview and the time taken.
async fn wait_answering(
    stack: &Stack,
    pw: &str,
    n: usize,
    within: Duration,
    what: &str,
    accept: impl Fn(&serde_json::Value) -> bool,
) -> (serde_json::Value, Duration) {
    let what = format!("{what}: {n} workers answering");
    wait_overview(stack, pw, within, &what, |o| {
        answering(o).len() == n && o["workers"].as_array().map_or(0, Vec::len) == n && accept(o)
    })
    .await
}

/// Waits until `accept` holds for the overview; returns it and the time taken.
async fn wait_overview(
    stack: &Stack,
    pw: &str,
    within: Duration,
    what: &str,
    accept: impl Fn(&serde_json::Value) -> bool,
) -> (serde_json::Value, Duration) {
    let t = Instant::now();
    let o = eventually(what, within, async || {
        let o = overview(stack, pw).await;
        if accept(&o) {
            Ok(o)
        } else {
            Err(format!(
                "{o:#}\nemulator:\n{}",
                stack.emulator.as_ref().unwrap().log()
            ))
        }
    })
    .await;
    (o, t.elapsed())
}

/// The workers service's tasks, as the emulator describes them.
async fn service_tasks(ecs: &aws_sdk_ecs::Client) -> Vec<aws_sdk_ecs::types::Task> {
    let listed = ecs
        .list_tasks()
        .cluster("fossa-wp")
        .service_name("fossa-wp-workers")
        .send()
        .await
        .unwrap();
    let described = ecs
        .describe_tasks()
        .cluster("fossa-wp")
        .set_tasks(Some(listed.task_arns().to_vec()))
        .send()
        .await
        .unwrap();
    described.tasks().to_vec()
}

/// The worker containers the emulator runs now (`docker ps` names).
fn task_containers(stack: &Stack) -> Vec<String> {
    let out = Run::of(stack.docker.cli().args([
        "ps",
        "--filter",
        "label=fossa-emu-task",
        "--format",
        "{{.Names}}",
    ]))
    .ok()
    .stdout;
    let mut v: Vec<String> = out.lines().map(str::to_owned).collect();
    v.sort();
    v
}

/// From inside task container `name`: connects to the internet host; the source address it saw.
fn task_probe(stack: &Stack, name: &str) -> Result<String, String> {
    let code = format!(
        "import socket\ns=socket.create_connection(('{INTERNET}',{INTERNET_PORT}),timeout=2)\nprint(s.recv(100).decode())\n"
    );
    let r = Run::of(
        stack
            .docker
            .cli()
            .args(["exec", name, "python", "-c", &code]),
    );
    if r.code == 0 {
        Ok(r.stdout.trim().to_owned())
    } else {
        Err(r.stderr.lines().last().unwrap_or_default().to_owned())
    }
}

async fn login(b: &Browser, ui: &str, pw: &str) {
    b.goto(&format!("{ui}/login")).await;
    b.type_into("input[name=password]", pw).await;
    b.click("form[action='/login'] button[type=submit]").await;
    b.wait_for("the overview after login", Duration::from_secs(15), |s| {
        s.contains("Workers")
    })
    .await;
}

/// Submits SpreadEtl from the form and waits for it to complete; the task page.
async fn submit_spread(b: &Browser, ui: &str) -> String {
    b.goto(&format!("{ui}/tasks")).await;
    b.click("select[name=model_class] option[value=SpreadEtl]")
        .await;
    b.click("form.submit button[type=submit]").await;
    b.wait_for(
        "SpreadEtl complete with 8 subtasks",
        Duration::from_secs(180),
        |s| {
            s.contains("8 subtasks on")
                && s.contains("badge complete\">complete")
                && !s.contains("badge running")
        },
    )
    .await
}

/// How many workers the task page says its subtasks ran on.
fn subtask_workers(page: &str) -> u32 {
    let at = page.find(" subtasks on ").expect("the subtask summary") + " subtasks on ".len();
    page[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn launch_build_run_on_emulated_fargate_scale_roll_and_destroy() {
    let gateway = Gateway::new("wp");
    let v1 = model("v1");
    // The models' requirements install a package of the attacker's: it asks
    // the metadata service for the gateway role's token while pip builds it
    // and at every Python start in the image.
    let attacker_dir = fossa_tests::TempDir::new("attacker");
    let attacker = Attacker::start(&gateway, &attacker_dir.0);
    let requirements = Attacker::requirement();
    let mut stack = Stack::launch_in(
        "wp",
        Some(&gateway),
        Some(&[("etl.py", v1.as_str()), ("requirements.txt", &requirements)]),
    )
    .await;
    let config = stack.config(&["nat", "broker", "image", "cluster"]);
    // launch (re-run, not told to skip waiting) follows the agent's first
    // boot: each duty's progress, then "2/2 workers answering".
    let ui_address = format!("127.0.0.1:{}", stack.ui_port);
    let following = stack
        .launch_command(&["--ui-address", &ui_address])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut agent = stack.agent(&config, "agent.log", &[]);
    let pw = ui_password(&stack).await;

    // 2. Image, then service, then 2 emulated tasks that the UI lists as answering.
    let (o, _) = wait_answering(
        &stack,
        &pw,
        2,
        Duration::from_secs(300),
        "first start",
        |o| o["models"] == serde_json::json!(["BurstEtl", "ScaleEtl", "SpreadEtl"]),
    )
    .await;
    let to_answering = started.elapsed();
    eprintln!("FIGURE agent start -> 2 emulated workers answering: {to_answering:?}");
    let followed = following.wait_with_output().unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&followed.stdout),
        String::from_utf8_lossy(&followed.stderr),
    );
    assert!(followed.status.success(), "{out}\n{err}");
    assert!(out.contains("is up"), "{out}");
    for line in [
        "NAT: NAT applied via gwout",
        "Broker: broker running at 192.168.1.10:5672; accepts an AMQP login",
        "Image: built and pushed",
        "2/2 workers answering",
    ] {
        assert!(err.contains(line), "launch did not say {line:?}:\n{err}");
    }
    eprintln!(
        "FIGURE launch following the first boot returned after: {:?}",
        started.elapsed()
    );
    for (_, address) in answering(&o) {
        assert!(
            // In 192.168.4.0/22 or 192.168.8.0/22: the third octet 4 to 11.
            address
                .strip_prefix("192.168.")
                .and_then(|rest| rest.split('.').next()?.parse::<u8>().ok())
                .is_some_and(|third| (4..=11).contains(&third)),
            "{o:#}"
        );
    }
    assert_eq!(o["broker"]["ok"], true, "{o:#}");
    assert_eq!(o["nat"]["ok"], true, "{o:#}");

    // 3b. The attacker's package was fetched and its code ran, at build time
    // (on the build bridge, out through NAT) and in the workers, and the
    // metadata stand-in heard nothing from either; the gateway itself does
    // reach it, so nothing but the fence kept them off.
    let ran = |at: &str| {
        attacker
            .requests()
            .into_iter()
            .filter(|r| r.contains(&format!("GET /ran-at-{at}?")))
            .collect::<Vec<_>>()
    };
    eventually(
        "the attacker's code reporting from the workers",
        Duration::from_secs(60),
        async || {
            holds(!ran("runtime").is_empty(), || {
                attacker.requests().join("\n")
            })
        },
    )
    .await;
    let requests = attacker.requests();
    assert!(
        requests.iter().any(|r| r.ends_with("GET /evil-1.0.tar.gz")) && !ran("build").is_empty(),
        "the build fetched and built the package: {requests:#?}"
    );
    for r in ran("build").iter().chain(&ran("runtime")) {
        assert!(!r.contains("imds=imds-answered"), "{r}");
    }
    assert_eq!(attacker.imds_requests(), Vec::<String>::new());
    let control = Run::of(gateway.gw.cmd("curl").args([
        "-sS",
        "-m",
        "5",
        "-X",
        "PUT",
        "http://169.254.169.254/latest/api/token",
    ]));
    assert_eq!(control.code, 0, "{}", control.stderr);
    assert_eq!(
        attacker.imds_requests().len(),
        1,
        "the gateway's own request"
    );
    eprintln!(
        "FIGURE attacker's package: {} build report(s), {} worker report(s), 0 requests to IMDS but the control",
        ran("build").len(),
        ran("runtime").len()
    );
    // The broker is on its own bridge: only AMQP on the gateway's network.
    let listening = Run::of(gateway.gw.cmd("ss").args(["-ltnH"])).stdout;
    assert!(
        !listening.contains(":25672") && !listening.contains(":4369"),
        "{listening}"
    );

    // 4. A task's connection to the internet arrives from the gateway's public address.
    let containers = task_containers(&stack);
    assert_eq!(containers.len(), 2, "{containers:?}");
    assert_eq!(
        task_probe(&stack, &containers[0]),
        Ok(GATEWAY_OUTER.to_owned())
    );

    // 3. A partitioned model from the form spreads over both Fargate workers.
    let b = Browser::start().await;
    let ui = format!("https://127.0.0.1:{}", stack.ui_port);
    login(&b, &ui, &pw).await;
    // The overview in the browser lists both Fargate workers by task id.
    let ids: Vec<String> = answering(&o).into_iter().map(|(id, _)| id).collect();
    b.goto(&format!("{ui}/")).await;
    b.wait_for(
        "both workers on the overview",
        Duration::from_secs(15),
        |s| ids.iter().all(|id| s.contains(id.as_str())),
    )
    .await;
    let page = submit_spread(&b, &ui).await;
    assert!(
        subtask_workers(&page) >= 2,
        "the subtasks ran on 2 workers:\n{page}"
    );
    assert!(page.contains("v1"), "{page}");
    // The workers' output reached CloudWatch Logs (the emulator ships it as
    // the awslogs driver does), and the agent reads it back with its role.
    assert!(page.contains("Worker output during this task"), "{page}");
    let what = format!("log lines for {}", ids[0]);
    let n = eventually(&what, Duration::from_secs(30), async || {
        let path = format!("/api/v1/workers/{}/logs?limit=100", ids[0]);
        let v = get_api(&stack, &pw, &path).await;
        match v["lines"].as_array().map_or(0, Vec::len) {
            0 => Err(v),
            n => Ok(n),
        }
    })
    .await;
    eprintln!(
        "FIGURE worker {} log: {n} lines from CloudWatch Logs",
        ids[0]
    );

    // 4. Remove the NAT rules: the task's connection fails, and the NAT duty
    //    puts them back within its period.
    // (The NAT duty may repair the rules while a probe runs; then flush
    // again: what must hold is that a probe without the rules fails.)
    let mut refused = false;
    let mut t = Instant::now();
    for _ in 0..3 {
        gateway
            .gw
            .iptables(&["-t", "nat", "-F", "FOSSA-POSTROUTING"]);
        t = Instant::now();
        let probe = task_probe(&stack, &containers[0]);
        let restored = gateway
            .gw
            .iptables(&["-t", "nat", "-S", "FOSSA-POSTROUTING"])
            .contains("MASQUERADE");
        if probe.is_err() && !restored {
            refused = true;
            break;
        }
        assert!(
            restored,
            "without NAT rules a task still got out: {probe:?}"
        );
    }
    assert!(refused, "no NAT, no way out");
    let within = Duration::from_secs(45).saturating_sub(t.elapsed());
    eventually("NAT repaired", within, async || {
        let probe = task_probe(&stack, &containers[0]);
        holds(probe == Ok(GATEWAY_OUTER.to_owned()), || {
            format!("{probe:?}\n{}", agent.log())
        })
    })
    .await;
    eprintln!(
        "FIGURE NAT rules removed -> tasks out again: {:?}",
        t.elapsed()
    );

    // 5. Scale 2 -> 3 in the UI changes the running containers.
    b.goto(&format!("{ui}/")).await;
    b.type_into("form[action='/scale'] input[name=workers]", "3")
        .await;
    b.click("form[action='/scale'] button[type=submit]").await;
    let t = Instant::now();
    wait_answering(
        &stack,
        &pw,
        3,
        Duration::from_secs(90),
        "scale 2 -> 3",
        |_| true,
    )
    .await;
    eprintln!(
        "FIGURE scale 2 -> 3 in the UI -> 3 answering: {:?}",
        t.elapsed()
    );
    assert_eq!(task_containers(&stack).len(), 3);

    // The broker killed on the gateway: the UI shows it down, the broker duty
    // starts it again, and a partitioned task submitted after that completes.
    Run::of(stack.docker.cli().args(["kill", "fossa-broker"])).ok();
    let (_, shown_down) = wait_overview(
        &stack,
        &pw,
        Duration::from_secs(20),
        "the broker shown down",
        |o| o["broker"]["ok"] == false,
    )
    .await;
    let (_, back) = wait_overview(
        &stack,
        &pw,
        Duration::from_secs(30),
        "the broker back",
        |o| o["broker"]["ok"] == true,
    )
    .await;
    eprintln!(
        "FIGURE broker killed on the gateway -> shown down {shown_down:?}, back {:?}",
        shown_down + back
    );
    let page = submit_spread(&b, &ui).await;
    assert!(page.contains("v1"), "{page}");

    agent = gateway_lost_mid_run(&stack, &gateway, &pw, &config, agent).await;

    // 6. A model change and a re-run of launch: one new image, one new
    //    revision, the tasks roll, and the new code is what runs.
    let v2 = model("v2");
    std::fs::write(stack.models.join("etl.py"), &v2).unwrap();
    let t = Instant::now();
    let rerun = stack.rerun(&[]);
    assert!(!rerun.stderr.contains("--workers"), "{rerun:?}");
    let ecs = aws_sdk_ecs::Client::new(&emulated_sdk(&stack).await);
    let what = "the tasks rolled onto the new revision";
    eventually(what, Duration::from_secs(240), async || {
        let tasks = &service_tasks(&ecs).await;
        let rolled = tasks.len() == 3
            && tasks.iter().all(|t| {
                t.task_definition_arn().unwrap_or_default().ends_with(":2")
                    && t.last_status() == Some("RUNNING")
            });
        let o = overview(&stack, &pw).await;
        if rolled && answering(&o).len() == 3 && o["workers"].as_array().map_or(0, Vec::len) == 3 {
            let ids: Vec<String> = answering(&o).into_iter().map(|(id, _)| id).collect();
            if tasks.iter().all(|t| {
                ids.iter()
                    .any(|i| t.task_arn().unwrap().ends_with(i.as_str()))
            }) {
                return Ok(());
            }
        }
        Err(format!(
            "{tasks:?}\n{}",
            stack.emulator.as_ref().unwrap().log()
        ))
    })
    .await;
    eprintln!(
        "FIGURE model change (re-run of launch) -> every task on the new code: {:?}",
        t.elapsed()
    );
    assert_eq!(
        stack.image_tags().len(),
        2,
        "one new image: {:?}",
        stack.image_tags()
    );
    let revisions = ecs
        .list_task_definitions()
        .family_prefix("fossa-wp-worker")
        .send()
        .await
        .unwrap();
    assert_eq!(
        revisions.task_definition_arns().len(),
        2,
        "one new revision"
    );
    let page = submit_spread(&b, &ui).await;
    assert!(
        page.contains("v2") && !page.contains("v1"),
        "the new code ran:\n{page}"
    );
    scrape_with_the_token(&stack, &ui).await;

    // The registry down: a new task cannot pull its image. The cluster line
    // says why, with ECS's reason, and the running workers keep serving.
    stack.registry.stop();
    let http = fossa_tests::agent_client();
    let scaled = http
        .post(format!("{ui}/api/v1/scale"))
        .basic_auth("fossa", Some(&pw))
        .json(&serde_json::json!({"workers": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(scaled.status(), 200);
    let (o, shown) = wait_overview(
        &stack,
        &pw,
        Duration::from_secs(90),
        "the pull failure shown",
        |o| {
            o["cluster"]["ok"] == false
                && o["cluster"]["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("CannotPullContainerError")
        },
    )
    .await;
    assert_eq!(
        answering(&o).len(),
        3,
        "the running workers keep serving: {o:#}"
    );
    eprintln!("FIGURE registry down, scale 3 -> 4 -> the pull failure on the overview: {shown:?}");
    // launch following a stack that does not come up gives up after
    // --wait-timeout and names the duty that is not done, with its last line.
    let gave_up =
        Run::of(stack.launch_command(&["--ui-address", &ui_address, "--wait-timeout", "20"]));
    assert_ne!(gave_up.code, 0, "{gave_up:?}");
    assert!(
        gave_up
            .stderr
            .contains("the stack did not come up within 20 s: Cluster: ")
            && gave_up.stderr.contains("CannotPullContainerError"),
        "{}",
        gave_up.stderr
    );

    // A new deployment whose tasks cannot start (a new task size, the
    // registry still down): ECS's circuit breaker fails it at its threshold
    // (3 failed starts for 4 workers) and rolls the service back to the last
    // completed deployment. The agent says so on the Cluster line and does
    // not fight the rollback: no UpdateService in the rounds that follow.
    let resized = Run::of(stack.launch_command(&["--memory", "1024", "--no-wait"]));
    assert_eq!(resized.code, 0, "{resized:?}");
    let t = Instant::now();
    let (o, _) = wait_overview(
        &stack,
        &pw,
        Duration::from_secs(180),
        "the rollback on the Cluster line",
        |o| {
            o["cluster"]["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("ECS rolled the service back to fossa-wp-worker:2 from fossa-wp-worker:3")
        },
    )
    .await;
    let line = o["cluster"]["detail"].as_str().unwrap().to_owned();
    assert!(
        line.contains("deployment failed: tasks failed to start"),
        "{line}"
    );
    assert_eq!(o["cluster"]["ok"], false, "{o:#}");
    let emulator = stack.emulator.as_ref().unwrap().log();
    assert!(
        emulator.contains("FAILED after 3 failed starts"),
        "the breaker's threshold:\n{emulator}"
    );
    eprintln!(
        "FIGURE a deployment that cannot start -> failed, rolled back and shown: {:?}",
        t.elapsed()
    );
    let actions_log = stack.actions_log();
    let updates = || {
        let log = std::fs::read_to_string(&actions_log).unwrap_or_default();
        log.lines().filter(|l| l.contains("UpdateService")).count()
    };
    let before = updates();
    // (While tasks fail it looks every 15 s: two rounds and more.)
    tokio::time::sleep(Duration::from_secs(35)).await;
    assert_eq!(updates(), before, "the agent does not fight ECS's rollback");

    // The registry back and a part recovering (the broker, killed and
    // started again): the cause may be gone, so the agent deploys the new
    // size once more, and it runs.
    stack.registry.restart();
    Run::of(stack.docker.cli().args(["kill", "fossa-broker"])).ok();
    let t = Instant::now();
    let ecs = aws_sdk_ecs::Client::new(&emulated_sdk(&stack).await);
    eventually(
        "4 tasks of the new size running",
        Duration::from_secs(240),
        async || {
            let on3 = service_tasks(&ecs)
                .await
                .iter()
                .filter(|t| {
                    t.task_definition_arn().unwrap_or_default().ends_with(":3")
                        && t.last_status() == Some("RUNNING")
                })
                .count();
            holds(on3 == 4, || format!("{on3} running on :3"))
        },
    )
    .await;
    let (_, back) = wait_answering(
        &stack,
        &pw,
        4,
        Duration::from_secs(120),
        "registry back",
        |o| {
            !o["cluster"]["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("rolled the service back")
        },
    )
    .await;
    assert!(
        updates() > before,
        "a new deployment once the broker recovered"
    );
    eprintln!(
        "FIGURE registry back and the broker recovered -> the new size deployed, 4 answering: {:?}",
        t.elapsed() + back
    );

    // Beyond the account's Fargate vCPU quota ECS places no task and says
    // why only in the service's events; the Cluster line gives that reason
    // and what to do, while the placed workers keep serving. With the quota
    // raised the task is placed and the line clears.
    let quota = |vcpu: f64| {
        let url = format!("{}/_emulator/quota", stack.emulator.as_ref().unwrap().url);
        let http = http.clone();
        async move {
            let r = http
                .post(url)
                .json(&serde_json::json!({ "vcpu": vcpu }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    let scale_to = |n: u32| {
        let http = http.clone();
        let url = format!("{ui}/api/v1/scale");
        let pw = pw.clone();
        async move {
            let r = http
                .post(url)
                .basic_auth("fossa", Some(&pw))
                .json(&serde_json::json!({ "workers": n }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    let unplaced = |o: &serde_json::Value| {
        o["cluster"]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot be placed")
    };
    quota(1.0).await;
    scale_to(5).await;
    let (o, shown) = wait_overview(
        &stack,
        &pw,
        Duration::from_secs(90),
        "the vCPU quota on the Cluster line",
        |o| unplaced(o),
    )
    .await;
    let line = o["cluster"]["detail"].as_str().unwrap();
    assert!(
        line.contains("1 of 5 workers cannot be placed: You've reached the limit on the number of vCPUs you can run concurrently")
            && line.contains("L-3032A538"),
        "{line}"
    );
    assert_eq!(o["cluster"]["ok"], false, "{o:#}");
    assert_eq!(answering(&o).len(), 4, "the placed workers keep serving");
    eprintln!("FIGURE vCPU quota full, scale 4 -> 5 -> the reason on the Cluster line: {shown:?}");
    quota(64.0).await;
    let (_, placed) = wait_answering(
        &stack,
        &pw,
        5,
        Duration::from_secs(120),
        "placed once the quota allows",
        |o| !unplaced(o),
    )
    .await;
    eprintln!("FIGURE quota raised -> 5 answering and the line clear: {placed:?}");
    scale_to(4).await;
    wait_answering(&stack, &pw, 4, Duration::from_secs(60), "back to 4", |_| {
        true
    })
    .await;

    // A model that exits at start on a worker (it passes the smoke test, which
    // has no broker URL): the new revision's tasks stop, the cluster line gives
    // ECS's reason, and the old revision's tasks keep serving.
    let bad = model("v3").replace(
        "import ayeaye\n",
        "import os\n\nimport ayeaye\n\nif os.environ.get(\"RABBITMQ_URL\"):\n    raise SystemExit(\"ETL_SOURCE is not set\")\n",
    );
    std::fs::write(stack.models.join("etl.py"), &bad).unwrap();
    stack.rerun(&[]);
    let (o, _) = wait_overview(
        &stack,
        &pw,
        Duration::from_secs(150),
        "the crash shown",
        |o| {
            o["cluster"]["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("Essential container in task exited (exit code 1)")
        },
    )
    .await;
    assert_eq!(
        answering(&o).len(),
        4,
        "the old revision keeps serving: {o:#}"
    );
    let page = submit_spread(&b, &ui).await;
    assert!(page.contains("v2") && !page.contains("v3"), "{page}");

    // Autoscaling from zero: with the good model back and 0..2 workers, the
    // idle fleet goes to zero; a submission then waits in the gateway,
    // starts a worker, runs, and the fleet goes back to zero.
    std::fs::write(stack.models.join("etl.py"), model("v2")).unwrap();
    stack.rerun(&[
        "--min-workers",
        "0",
        "--max-workers",
        "2",
        "--idle-window",
        "20",
    ]);
    let (_, to_zero) = wait_overview(
        &stack,
        &pw,
        Duration::from_secs(240),
        "the idle fleet at zero",
        |o| o["desired_workers"] == 0 && o["workers"].as_array().is_some_and(Vec::is_empty),
    )
    .await;
    let http = fossa_tests::agent_client();
    let api = format!("https://127.0.0.1:{}/api/v1", stack.ui_port);
    let t0 = Instant::now();
    let queue_id = submit_at_zero(&stack, &pw, "SpreadEtl").await;
    let mut first_running = None;
    let done = eventually(
        "the task at zero complete",
        Duration::from_secs(240),
        async || {
            let q = get_api(&stack, &pw, &format!("/api/v1/queue/{queue_id}")).await;
            if q["state"] == "left" {
                first_running.get_or_insert(t0.elapsed());
                let id = q["detail"]["task_id"].as_str().unwrap_or_default();
                let d = get_api(&stack, &pw, &format!("/api/v1/tasks/{id}")).await;
                if d["task"]["status"] == "complete"
                    && d["groups"][0]["subtasks"]
                        .as_array()
                        .is_some_and(|s| s.len() == 8)
                {
                    return Ok(t0.elapsed());
                }
            }
            Err(q)
        },
    )
    .await;
    let (_, back) = wait_overview(&stack, &pw, Duration::from_secs(120), "back to zero", |o| {
        o["desired_workers"] == 0 && o["workers"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    eprintln!(
        "FIGURE emulator autoscale 0..2: idle fleet at zero after {to_zero:?}; submission -> sent to a worker {:?}, complete {:?}; back to zero {back:?} after (window 20 s)",
        first_running.unwrap_or_default(),
        done
    );

    // A burst on Spot: 40 subtasks with 0..4 workers, the first on Fargate
    // and the rest on Fargate Spot. One idle Spot worker is interrupted, and
    // the fleet is scaled to 0 while the last subtask runs: the busy
    // worker, protected from scale-in, finishes it, and only then stops.
    stack.rerun(BURST_SETTINGS);
    // The cluster duty moves the service to the Spot strategy (a new
    // deployment, at zero tasks) within its period; the burst comes after.
    eventually(
        "the service's strategy after --spot",
        Duration::from_secs(90),
        async || {
            let d = ecs
                .describe_services()
                .cluster("fossa-wp")
                .services("fossa-wp-workers")
                .send()
                .await
                .unwrap();
            let strategy: Vec<(String, i32, i32)> = d.services()[0]
                .capacity_provider_strategy()
                .iter()
                .map(|s| (s.capacity_provider().to_owned(), s.base(), s.weight()))
                .collect();
            if strategy
                == [
                    ("FARGATE".to_owned(), 1, 1),
                    ("FARGATE_SPOT".to_owned(), 0, 3),
                ]
            {
                return Ok(());
            }
            Err(format!("{strategy:?}"))
        },
    )
    .await;
    let t0 = Instant::now();
    let queue_id = submit_at_zero(&stack, &pw, "BurstEtl").await;
    let (mut task_id, mut first_subtask, mut worker_secs, mut peak) =
        (String::new(), None, 0.0f64, 0usize);
    let mut providers = std::collections::BTreeMap::<String, String>::new();
    let mut last = Instant::now();
    // Until 39 subtasks are complete and the 40th runs.
    let what = "the burst at its last subtask";
    let long_on = eventually(what, Duration::from_secs(300), async || {
        let o = overview(&stack, &pw).await;
        let running: Vec<&serde_json::Value> = o["workers"]
            .as_array()
            .map(|w| w.iter().filter(|w| w["status"] == "RUNNING").collect())
            .unwrap_or_default();
        worker_secs += running.len() as f64 * last.elapsed().as_secs_f64();
        last = Instant::now();
        peak = peak.max(running.len());
        for w in &running {
            providers.insert(
                w["id"].as_str().unwrap_or_default().into(),
                w["provider"].as_str().unwrap_or_default().into(),
            );
        }
        if task_id.is_empty() {
            let q = get_api(&stack, &pw, &format!("/api/v1/queue/{queue_id}")).await;
            if q["state"] == "left" {
                task_id = q["detail"]["task_id"].as_str().unwrap_or_default().into();
            }
        }
        if !task_id.is_empty() {
            let d = get_api(&stack, &pw, &format!("/api/v1/tasks/{task_id}")).await;
            let subs = d["groups"][0]["subtasks"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if first_subtask.is_none() && !subs.is_empty() {
                first_subtask = Some(t0.elapsed());
            }
            let done = subs.iter().filter(|s| s["status"] == "complete").count();
            let long = subs.iter().find(|s| s["status"] == "running" && done == 39);
            if let Some(l) = long {
                return Ok(l["worker_id"].as_str().unwrap_or_default().to_owned());
            }
        }
        Err(format!(
            "{o:#}\nemulator:\n{}",
            stack.emulator.as_ref().unwrap().log()
        ))
    })
    .await;
    assert_eq!(peak, 4, "the fleet grew to its maximum: {providers:?}");
    let on = |p: &str| providers.values().filter(|v| *v == p).count();
    assert_eq!(
        (on("FARGATE"), on("FARGATE_SPOT")),
        (1, 3),
        "one on Fargate, the rest on Spot: {providers:?}"
    );
    // The busy worker is protected (shown from the refresh after the one
    // that saw it busy); an idle Spot worker is interrupted.
    wait_overview(
        &stack,
        &pw,
        Duration::from_secs(15),
        "the worker running the last subtask protected",
        |o| {
            o["workers"].as_array().is_some_and(|ws| {
                ws.iter()
                    .any(|w| w["id"] == long_on.as_str() && w["protected"] == true)
            })
        },
    )
    .await;
    // An idle worker's protection is lifted at the refresh after it idles.
    let idle_spot = |w: &serde_json::Value| {
        w["provider"] == "FARGATE_SPOT"
            && w["protected"] == false
            && w["running"].as_array().is_some_and(Vec::is_empty)
    };
    let (o, _) = wait_overview(
        &stack,
        &pw,
        Duration::from_secs(20),
        "an idle, unprotected Spot worker",
        |o| {
            o["workers"]
                .as_array()
                .is_some_and(|ws| ws.iter().any(idle_spot))
        },
    )
    .await;
    let victim = o["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| idle_spot(w))
        .and_then(|w| w["id"].as_str())
        .unwrap()
        .to_owned();
    spot_interruption(&stack, &victim).await;
    // The worker running the last subtask is stopped mid-subtask: Spot takes
    // it back (or, on Fargate, ECS stops it). It drains (#25): SIGTERM, and
    // its subtask finishes within the stop window, is counted once, and is
    // not put back; the task stops once it is done.
    let long_spot = providers.get(&long_on).map(String::as_str) == Some("FARGATE_SPOT");
    let told = Instant::now();
    if long_spot {
        spot_interruption(&stack, &long_on).await;
    } else {
        ecs.stop_task()
            .cluster("fossa-wp")
            .task(&long_on)
            .reason("stopped mid-subtask by the test")
            .send()
            .await
            .unwrap();
    }
    let scaled = http
        .post(format!("{api}/scale"))
        .basic_auth("fossa", Some(&pw))
        .json(&serde_json::json!({"workers": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(scaled.status(), 200);
    // Scaled to 0 while the last subtask runs: the idle workers go, the
    // busy ones stay (desired 0), and the task completes.
    let (mut kept_seen, mut interrupted_row, mut complete) = (false, false, None);
    let mut drained: Option<Duration> = None;
    let what = "after the scale to 0: the task complete and the interrupted row";
    eventually(what, Duration::from_secs(420).saturating_sub(t0.elapsed()), async || {
        let o = overview(&stack, &pw).await;
        let rows = o["workers"].as_array().cloned().unwrap_or_default();
        let running: Vec<&serde_json::Value> =
            rows.iter().filter(|w| w["status"] == "RUNNING").collect();
        worker_secs += running.len() as f64 * last.elapsed().as_secs_f64();
        last = Instant::now();
        // Only busy, protected workers run on (the parent's, if it is not
        // on the stopped one), and the stopped one drains its subtask: on
        // its way out, still answering, given no new work.
        let draining = rows.iter().any(|w| {
            w["id"] == long_on.as_str()
                && matches!(w["status"].as_str(), Some("DEACTIVATING" | "STOPPING"))
                && w["running"].as_array().is_some_and(|r| !r.is_empty())
        });
        if o["desired_workers"] == 0
            && running.len() <= 1
            && running.iter().all(|w| w["protected"] == true)
            && draining
            && complete.is_none()
        {
            kept_seen = true;
        }
        if drained.is_none()
            && complete.is_some()
            && rows.iter().all(|w| w["id"] != long_on.as_str() || w["status"] == "STOPPED")
        {
            drained = Some(told.elapsed());
        }
        interrupted_row |= rows.iter().any(|w| {
            w["id"] == victim.as_str()
                && w["status"] == "STOPPED"
                && w["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("interrupted by Fargate Spot"))
        });
        let d = get_api(&stack, &pw, &format!("/api/v1/tasks/{task_id}")).await;
        let subs = d["groups"][0]["subtasks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if complete.is_none()
            && d["task"]["status"] == "complete"
            && subs.len() == 40
            && subs.iter().all(|s| s["status"] == "complete")
        {
            complete = Some(t0.elapsed());
        }
        holds(complete.is_some() && interrupted_row && drained.is_some(), || {
            let emulator = stack.emulator.as_ref().unwrap().log();
            format!("kept {kept_seen}, interrupted row {interrupted_row}, complete {complete:?}:\n{o:#}\n{d:#}\nemulator:\n{emulator}")
        })
    })
    .await;
    assert!(
        kept_seen,
        "only the busy workers ran on at desired 0, the stopped one draining"
    );
    // The stopped worker exited on its own (exit code 0, not SIGKILL's 137),
    // and nothing was put back.
    let stopped = ecs
        .describe_tasks()
        .cluster("fossa-wp")
        .tasks(&long_on)
        .send()
        .await
        .unwrap();
    let t = &stopped.tasks()[0];
    assert_eq!(t.last_status(), Some("STOPPED"));
    assert_eq!(t.containers()[0].exit_code(), Some(0), "{t:?}");
    let events = get_api(&stack, &pw, "/api/v1/events").await.to_string();
    assert!(!events.contains("put back on the queue"), "{events}");
    let log = stack.emulator.as_ref().unwrap().log();
    assert!(
        log.contains(&format!(
            "task {victim} STOPPED Your Spot Task was interrupted."
        )),
        "{log}"
    );
    let events = get_api(&stack, &pw, "/api/v1/events").await.to_string();
    assert!(
        events.contains(&format!("worker {victim} on Fargate Spot was interrupted")),
        "{events}"
    );
    let (_, emptied) = wait_overview(
        &stack,
        &pw,
        Duration::from_secs(60),
        "the last worker gone once idle",
        |o| {
            o["workers"]
                .as_array()
                .is_some_and(|w| w.iter().all(|w| w["status"] != "RUNNING"))
        },
    )
    .await;
    worker_secs += last.elapsed().as_secs_f64();
    eprintln!(
        "FIGURE emulator: the worker running the 75 s subtask stopped mid-run ({}): drained, the subtask counted once, 0 put back; STOPPED {:.1} s after the stop",
        if long_spot { "Spot interruption" } else { "StopTask" },
        drained.unwrap_or_default().as_secs_f64()
    );
    eprintln!(
        "FIGURE emulator burst 0..4 on Spot: 40 subtasks; submission -> first subtask {:?}, complete {:?}; peak {peak} workers; {:.4} worker-hours (a fixed 4 over the same {:?}: {:.4}); last worker gone {emptied:?} after completion",
        first_subtask.unwrap_or_default(),
        complete.unwrap_or_default(),
        worker_secs / 3600.0,
        t0.elapsed(),
        4.0 * t0.elapsed().as_secs_f64() / 3600.0
    );

    spot_fleet_at_the_issues_size(&stack, &pw, &ecs, &attacker).await;

    // The history outlives its workers. Every task that ran on them is still
    // listed, complete and with its worker, though no task that ran them is
    // left: the SpreadEtl runs from before the roll onto v2, after it, and
    // after the registry fault, and the burst's parent with its 40 subtasks.
    let rows = |v: serde_json::Value| v["tasks"].as_array().cloned().unwrap_or_default();
    let spread = rows(
        get_api(
            &stack,
            &pw,
            "/api/v1/tasks?model=SpreadEtl&status=complete&parents=true&limit=100",
        )
        .await,
    );
    assert!(spread.len() >= 4, "{spread:#?}");
    let burst = rows(
        get_api(
            &stack,
            &pw,
            "/api/v1/tasks?model=BurstEtl&status=complete&limit=100",
        )
        .await,
    );
    assert_eq!(burst.len(), 41, "{burst:#?}");
    let live = overview(&stack, &pw).await;
    for r in spread.iter().chain(&burst) {
        let w = r["worker_id"].as_str().unwrap_or_default();
        assert!(!w.is_empty(), "{r}");
        assert!(
            live["workers"]
                .as_array()
                .is_none_or(|ws| ws.iter().all(|x| x["id"] != w || x["status"] != "RUNNING")),
            "{w} is gone, and its tasks are still listed"
        );
    }

    // The emulator refuses what Fargate refuses (its RULES): a task size with
    // no Fargate configuration, as `launch` now refuses before anything.
    let refused = aws_sdk_ecs::Client::new(&emulated_sdk(&stack).await)
        .register_task_definition()
        .family("fossa-wp-size-probe")
        .requires_compatibilities(aws_sdk_ecs::types::Compatibility::Fargate)
        .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
        .cpu("1024")
        .memory("512")
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name("probe")
                .image("probe")
                .build(),
        )
        .send()
        .await
        .expect_err("1024 CPU with 512 MiB is no Fargate size");
    let said = format!("{:?}", refused.into_service_error());
    assert!(
        said.contains("No Fargate configuration exists for given values: 1024 CPU, 512 memory"),
        "{said}"
    );

    // More workers than the account's Fargate vCPU quota (the emulator
    // reports 64 vCPU each): refused before anything changes.
    let refused = Run::of(stack.launch_command(&[
        "--max-workers",
        "100",
        "--cpu",
        "1024",
        "--memory",
        "2048",
        "--no-wait",
    ]));
    assert_eq!(refused.code, 1, "{refused:?}");
    // With Spot kept from the stack and a deployment's surge, 200 tasks: 50
    // on Fargate (fits), 150 on Spot (does not).
    assert!(
        refused.stderr.contains(
            "100 workers of 1024 CPU units need 150 vCPU of Fargate Spot while a deployment replaces them (ECS runs up to 200 % of the tasks then), and this account's quota in"
        ) && refused.stderr.contains("is 64 vCPU (Service Quotas, code L-36FBB829)"),
        "{refused:?}"
    );
    let config = aws_sdk_ssm::Client::new(&stack.sdk)
        .get_parameter()
        .name("/fossa/wp/config")
        .send()
        .await
        .unwrap();
    let config: serde_json::Value =
        serde_json::from_str(config.parameter().unwrap().value().unwrap()).unwrap();
    assert_eq!(
        (
            config["autoscale"]["max_workers"].clone(),
            config["cpu"].clone()
        ),
        (serde_json::json!(4), serde_json::json!(256)),
        "nothing changed"
    );

    // IAM was enforced all along (the agent signs as a user holding the
    // gateway role's documents): nothing it called was refused.
    let log = agent.log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("AccessDenied") || l.contains("is not authorized to perform"))
        .collect();
    assert!(refused.is_empty(), "the gateway role lacks: {refused:#?}");

    // 7. destroy with the agent running leaves nothing in moto, and no task
    //    container or namespace.
    let destroyed = Run::of(
        std::process::Command::new(fossa_tests::bin("fossa-bootstrap"))
            .args([
                "destroy",
                "--yes",
                "--stack",
                "wp",
                "--endpoint-url",
                &stack.endpoint,
            ])
            .envs(stack.moto.env()),
    )
    .ok();
    assert!(destroyed.stdout.contains("nothing left"), "{destroyed:?}");
    eventually(
        "no task containers after destroy",
        Duration::from_secs(30),
        async || {
            let left = task_containers(&stack);
            holds(left.is_empty(), || format!("{left:?}"))
        },
    )
    .await;
    eventually(
        "no task veth after destroy",
        Duration::from_secs(30),
        async || {
            let links = Run::of(gateway.gw.cmd("ip").args(["-o", "link"]))
                .ok()
                .stdout;
            holds(!links.lines().any(|l| l.contains(": fe")), || links)
        },
    )
    .await;
    agent.stop();
}

/// Submits `model` through the API to a fleet at zero: it is queued in the
/// gateway; returns its queue id.
async fn submit_at_zero(stack: &Stack, pw: &str, model: &str) -> i64 {
    let sent = post_task(stack, pw, model).await;
    sent["queued"]["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("{model} queued at zero: {sent}"))
}

/// `POST /api/v1/tasks` of `model`; what the agent answered.
async fn post_task(stack: &Stack, pw: &str, model: &str) -> serde_json::Value {
    fossa_tests::agent_client()
        .post(format!("https://127.0.0.1:{}/api/v1/tasks", stack.ui_port))
        .basic_auth("fossa", Some(pw))
        .json(&serde_json::json!({ "model_class": model }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Fargate Spot takes task `id` back (the emulator's interruption: SIGTERM,
/// the stop window, then STOPPED with the stop code `SpotInterruption`).
async fn spot_interruption(stack: &Stack, id: &str) {
    let r = reqwest::Client::new()
        .post(format!(
            "{}/_emulator/interrupt",
            stack.emulator.as_ref().unwrap().url
        ))
        .json(&serde_json::json!({"task": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

/// SDK settings for the emulator's endpoint (tasks are answered there, not by moto).
async fn emulated_sdk(stack: &Stack) -> aws_config::SdkConfig {
    stack
        .sdk
        .clone()
        .into_builder()
        .endpoint_url(&stack.endpoint)
        .build()
}

/// The gateway lost mid-run (#26): its instance goes with the agent (and
/// the UI's process), the broker and the NAT rules, while a partitioned
/// task runs; the workers, Fargate tasks, run on. A new gateway from the
/// same launch configuration starts on the same data volume (the state
/// directory, and Docker's data with the broker's) and the same lasting
/// address: NAT, the UI and the workers come back, the history is there,
/// and the task cut off from the broker is submitted again and completes.
async fn gateway_lost_mid_run(
    stack: &Stack,
    gateway: &fossa_tests::fargate::Gateway,
    pw: &str,
    config: &std::path::Path,
    mut agent: fossa_tests::stack::Agent,
) -> fossa_tests::stack::Agent {
    let rows = |h: &serde_json::Value| {
        h["tasks"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|r| r["task_id"].as_str().map(str::to_owned))
                    .collect::<std::collections::BTreeSet<_>>()
            })
            .unwrap_or_default()
    };
    let before = rows(&get_api(stack, pw, "/api/v1/tasks?limit=1000").await);
    assert!(!before.is_empty(), "the history has the runs so far");
    let sent = post_task(stack, pw, "SpreadEtl").await;
    let parent = sent["task_id"]
        .as_str()
        .unwrap_or_else(|| panic!("SpreadEtl sent: {sent}"))
        .to_owned();
    eventually(
        "its subtasks running",
        Duration::from_secs(60),
        async || {
            let d = get_api(stack, pw, &format!("/api/v1/tasks/{parent}")).await;
            let subtasks = d["groups"].as_array().is_some_and(|g| !g.is_empty());
            holds(subtasks && d["task"]["status"] == "running", || {
                format!("{d}")
            })
        },
    )
    .await;

    // The instance goes: every process of the agent, the broker, the rules.
    Run::of(std::process::Command::new("pkill").args(["-9", "-P", &agent.pid().to_string()]));
    agent.kill9();
    Run::of(
        stack
            .docker
            .cli()
            .args(["kill", "-s", "KILL", "fossa-broker"]),
    )
    .ok();
    for (table, chain) in [("nat", "FOSSA-POSTROUTING"), ("filter", "FOSSA-FORWARD")] {
        gateway.gw.iptables(&["-t", table, "-F", chain]);
    }
    let lost = Instant::now();
    let probe = task_probe(stack, &task_containers(stack)[0]);
    assert!(probe.is_err(), "no gateway, no way out: {probe:?}");

    // user-data on the new instance: it took the data volume over.
    let state = stack.dir.0.join("state");
    std::fs::write(
        state.join("instances"),
        "i-0aaaaaaaaaaaaaaa1 2026-12-06T01:00:00Z\ni-0bbbbbbbbbbbbbbb2 2026-12-06T02:00:00Z\n",
    )
    .unwrap();
    let agent = stack.agent(config, "agent-replaced.log", &[]);
    let container = task_containers(stack)[0].clone();
    eventually("NAT back", Duration::from_secs(120), async || {
        let probe = task_probe(stack, &container);
        holds(probe == Ok(GATEWAY_OUTER.to_owned()), || {
            format!("{probe:?}\n{}", agent.log())
        })
    })
    .await;
    let nat_back = lost.elapsed();
    let (_, _) = wait_overview(stack, pw, Duration::from_secs(120), "the UI back", |o| {
        !o.is_null()
    })
    .await;
    let ui_back = lost.elapsed();
    let (o, _) = wait_answering(
        stack,
        pw,
        3,
        Duration::from_secs(180),
        "the workers back",
        |o| o["broker"]["ok"] == true,
    )
    .await;
    let workers_back = lost.elapsed();
    assert_eq!(
        o["agent"]["replaced"]["previous"], "i-0aaaaaaaaaaaaaaa1",
        "the overview says the gateway was replaced: {}",
        o["agent"]
    );
    // The task cut off from the broker: submitted again, and that completes.
    eventually(
        "the cut-off task's next attempt complete",
        Duration::from_secs(240),
        async || {
            let d = get_api(stack, pw, &format!("/api/v1/tasks/{parent}")).await;
            let last = fossa_tests::last_attempt(&d, &parent);
            let l = get_api(stack, pw, &format!("/api/v1/tasks/{last}")).await;
            holds(last != parent && l["task"]["status"] == "complete", || {
                // What says why comes last: CI keeps the output's tail.
                format!(
                    "{}\n{}\nfirst: {}\nattempts: {}\nlast: {} (stuck: {})",
                    agent.log(),
                    nodes_now(stack),
                    d["task"],
                    d["attempts"],
                    l["task"],
                    l["stuck"]
                )
            })
        },
    )
    .await;
    let all_done = lost.elapsed();
    let after = rows(&get_api(stack, pw, "/api/v1/tasks?limit=1000").await);
    let missing: Vec<_> = before.difference(&after).collect();
    assert!(
        missing.is_empty(),
        "the history came back whole: missing {missing:?}"
    );
    let ev = get_api(stack, pw, "/api/v1/events").await.to_string();
    assert!(ev.contains("replaced i-0aaaaaaaaaaaaaaa1"), "{ev}");
    assert!(ev.contains("cut off from the broker"), "{ev}");
    eprintln!(
        "FIGURE gateway lost mid-run -> NAT back {nat_back:?}, UI back {ui_back:?}, 3 workers answering {workers_back:?}, the cut-off task complete {all_done:?}, tasks lost 0"
    );
    agent
}

/// For a failure's message: each worker container's Fossa log (its last
/// 15 lines) and the broker's queues.
fn nodes_now(stack: &Stack) -> String {
    let mut all = String::new();
    for c in task_containers(stack) {
        let r = Run::of(stack.docker.cli().args(["logs", "--tail", "15", &c]));
        all.push_str(&format!("== {c}\n{}{}\n", r.stdout, r.stderr));
    }
    let q = Run::of(stack.docker.cli().args([
        "exec",
        "fossa-broker",
        "rabbitmqctl",
        "-q",
        "list_queues",
        "name",
        "messages",
        "consumers",
    ]));
    all.push_str(&format!("== queues\n{}{}", q.stdout, q.stderr));
    all
}

/// The burst's fleet settings: 0 to 4 workers on the Spot strategy, idle
/// after 20 s (the issue's-size step goes back to them).
const BURST_SETTINGS: &[&str] = &[
    "--min-workers",
    "0",
    "--max-workers",
    "4",
    "--idle-window",
    "20",
    "--spot",
];

/// The issue's run (#25): subtasks, and the seconds each works.
const SCALE_SUBTASKS: usize = 200;
const SCALE_WORK_SECS: u64 = 4;

/// How often each `ScaleEtl` subtask's output, and its completion, reached
/// the internet host's server in `requests` (the attacker's stand-in logs
/// every request): `n` → count.
fn scale_counts(requests: &[String], what: &str) -> std::collections::BTreeMap<u64, u32> {
    let mut counts = std::collections::BTreeMap::new();
    for r in requests {
        let Some(rest) = r
            .split_once(&format!(" GET /{what}/"))
            .map(|(_, rest)| rest)
        else {
            continue;
        };
        let n = rest.split(['?', ' ']).next().unwrap_or_default();
        if let Ok(n) = n.parse() {
            *counts.entry(n).or_insert(0) += 1;
        }
    }
    counts
}

/// `GET /api/v1/workers`: every worker row with its last node_info.
async fn worker_rows(stack: &Stack, pw: &str) -> Vec<serde_json::Value> {
    get_api(stack, pw, "/api/v1/workers").await["workers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The `n` of each `ScaleEtl` subtask a worker row shows running, with
/// how many seconds in it is.
fn scale_running(w: &serde_json::Value, now: i64) -> Vec<(u64, i64)> {
    w["node"]["running_tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["task_id"].as_str().is_some_and(|i| i.contains("::")))
        .filter_map(|t| {
            let n = t["method_kwargs"]["n"].as_u64()?;
            Some((n, now - t["started"].as_i64().unwrap_or(now)))
        })
        .collect()
}

/// What went wrong on purpose during a run of `ScaleEtl`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Disturbance {
    /// Fargate Spot takes a busy Spot worker back (SIGTERM, the window).
    Spot,
    /// A busy worker's container killed with -9 (out of memory: no window).
    Kill,
}

/// One run of `ScaleEtl` on the fleet: what it came to.
struct ScaleRun {
    makespan: Duration,
    outputs: std::collections::BTreeMap<u64, u32>,
    completions: std::collections::BTreeMap<u64, u32>,
    /// (what, worker, seconds into the run).
    done: Vec<(Disturbance, String, f64)>,
    /// The killed worker's subtasks (their `n`), seconds from its STOPPED
    /// to all of them running again (or done), and from the kill to STOPPED.
    killed_subtasks: Vec<u64>,
    stopped_to_again: Option<f64>,
    kill_to_stopped: Option<f64>,
    /// When the killed worker's task read STOPPED, seconds since the epoch.
    stopped_at: Option<f64>,
}

/// Submits `ScaleEtl` and waits for its parent to complete, doing each of
/// `plan` to a busy worker (never the parent's) at a random moment in its
/// share of the first half of the run.
async fn scale_run(
    stack: &Stack,
    pw: &str,
    ecs: &aws_sdk_ecs::Client,
    attacker: &Attacker,
    plan: &[Disturbance],
) -> ScaleRun {
    let before = attacker.requests().len();
    let rows = worker_rows(stack, pw).await;
    let slots: u64 = rows
        .iter()
        .filter_map(|w| w["node"]["max_concurrent_tasks"].as_u64())
        .sum();
    // Undisturbed, about every slot but the parent's busy all along.
    let expected = (SCALE_SUBTASKS as u64 * SCALE_WORK_SECS) as f64 / (slots.max(2) - 1) as f64;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut random = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as f64 / (1u64 << 31) as f64
    };
    let due: Vec<f64> = (0..plan.len())
        .map(|i| expected * 0.5 * (i as f64 + random()) / plan.len() as f64)
        .collect();
    let t0 = Instant::now();
    let sent = post_task(stack, pw, "ScaleEtl").await;
    let parent = sent["task_id"]
        .as_str()
        .unwrap_or_else(|| panic!("ScaleEtl sent at once: {sent}"))
        .to_owned();
    let parent_worker = sent["worker_id"].as_str().unwrap_or_default().to_owned();
    let mut run = ScaleRun {
        makespan: Duration::ZERO,
        outputs: Default::default(),
        completions: Default::default(),
        done: Vec::new(),
        killed_subtasks: Vec::new(),
        stopped_to_again: None,
        kill_to_stopped: None,
        stopped_at: None,
    };
    let (mut killed, mut killed_at, mut stopped_at) = (None::<String>, 0.0f64, None::<f64>);
    let unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let what = "the ScaleEtl parent complete, every disturbance done";
    eventually(what, Duration::from_secs(600), async || {
        let rows = worker_rows(stack, pw).await;
        let now = fossa_contract::unix_now();
        let at = t0.elapsed().as_secs_f64();
        if let Some(&d) = plan
            .get(run.done.len())
            .filter(|_| at >= due[run.done.len()])
        {
            let victim = rows.iter().find(|w| {
                let id = w["id"].as_str().unwrap_or_default();
                let running = scale_running(w, now);
                w["status"] == "RUNNING"
                    && id != parent_worker
                    && run.done.iter().all(|(_, v, _)| v != id)
                    && !running.is_empty()
                    && match d {
                        Disturbance::Spot => w["capacity_provider"] == "FARGATE_SPOT",
                        // Every slot busy, each subtask 1 to 2 s into its
                        // 4 s: none can finish, and none start, unseen
                        // before the kill (as lost_work.rs).
                        Disturbance::Kill => {
                            w["node"]["available_processing_capacity"] == 0
                                && w["node"]["running_tasks"].as_array().map(Vec::len)
                                    == Some(running.len())
                                && running.iter().all(|(_, s)| (1..=2).contains(s))
                        }
                    }
            });
            if let Some(w) = victim {
                let id = w["id"].as_str().unwrap().to_owned();
                match d {
                    Disturbance::Spot => spot_interruption(stack, &id).await,
                    Disturbance::Kill => {
                        Run::of(stack.docker.cli().args([
                            "kill",
                            "-s",
                            "KILL",
                            &format!("fossa-emu-{id}"),
                        ]))
                        .ok();
                        killed_at = unix();
                        run.killed_subtasks =
                            scale_running(w, now).iter().map(|(n, _)| *n).collect();
                        killed = Some(id.clone());
                    }
                }
                run.done.push((d, id, at));
            }
        }
        if let (Some(id), None) = (&killed, stopped_at) {
            let t = ecs
                .describe_tasks()
                .cluster("fossa-wp")
                .tasks(id)
                .send()
                .await;
            if let Some(s) = t
                .ok()
                .and_then(|t| t.tasks().first().and_then(|t| t.stopped_at().cloned()))
            {
                let s = s.as_secs_f64();
                stopped_at = Some(s);
                run.kill_to_stopped = Some(s - killed_at);
            }
        }
        if let (Some(id), Some(stopped), None) = (&killed, stopped_at, run.stopped_to_again) {
            let outputs = scale_counts(&attacker.requests()[before..], "output");
            let again = run.killed_subtasks.iter().all(|n| {
                outputs.contains_key(n)
                    || rows.iter().any(|w| {
                        w["id"] != id.as_str() && scale_running(w, now).iter().any(|(m, _)| m == n)
                    })
            });
            if again {
                run.stopped_to_again = Some(unix() - stopped);
            }
        }
        let d = get_api(stack, pw, &format!("/api/v1/tasks/{parent}")).await;
        if run.makespan.is_zero() && d["task"]["status"] == "complete" {
            run.makespan = t0.elapsed();
        }
        let waiting_on_kill = killed.is_some() && run.stopped_to_again.is_none();
        let finished = !run.makespan.is_zero() && run.done.len() == plan.len() && !waiting_on_kill;
        // On a failure: what never wrote its output, what the gateway did
        // about lost work, and whether it found the parent stuck.
        let said = if finished {
            Vec::new()
        } else {
            let ev = get_api(stack, pw, "/api/v1/events").await;
            ev["events"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["source"] == "rescue" || e["source"] == "autoscale")
                .filter_map(|e| e["message"].as_str().map(str::to_owned))
                .collect()
        };
        holds(finished, || {
            let outputs = scale_counts(&attacker.requests()[before..], "output");
            let missing: Vec<u64> = (0..SCALE_SUBTASKS as u64)
                .filter(|n| !outputs.contains_key(n))
                .collect();
            format!(
                "done {:?} of {plan:?}; task {}; stuck {}; outputs missing {missing:?}; killed subtasks {:?}; events {said:#?}",
                run.done, d["task"], d["stuck"], run.killed_subtasks
            )
        })
    })
    .await;
    let requests = attacker.requests()[before..].to_vec();
    run.outputs = scale_counts(&requests, "output");
    run.completions = scale_counts(&requests, "completion");
    run.stopped_at = stopped_at;
    run
}

/// No lost work at the issue's size, on the emulator (#25): `ScaleEtl`'s
/// 200 subtasks of 4 s, each writing its own output, on a fixed fleet of 8
/// workers that the Spot strategy places 2 on Fargate and 6 on Fargate
/// Spot; run once undisturbed, then with Spot taking back a quarter of the
/// fleet (2 busy Spot workers, which drain) and one more busy worker's
/// container killed with -9 (out of memory: no stop window; its subtasks
/// are put back once ECS says STOPPED). Every output is written once, the
/// parent counts each subtask once and completes with nobody acting.
async fn spot_fleet_at_the_issues_size(
    stack: &Stack,
    pw: &str,
    ecs: &aws_sdk_ecs::Client,
    attacker: &Attacker,
) {
    stack.rerun(&[
        "--min-workers",
        "8",
        "--max-workers",
        "8",
        "--idle-window",
        "20",
        "--spot",
    ]);
    let (o, up) = wait_overview(
        stack,
        pw,
        Duration::from_secs(300),
        "a fixed fleet of 8",
        |o| o["desired_workers"] == 8 && answering(o).len() == 8,
    )
    .await;
    let on = |p: &str| {
        o["workers"].as_array().map_or(0, |ws| {
            ws.iter()
                .filter(|w| w["status"] == "RUNNING" && w["provider"] == p)
                .count()
        })
    };
    assert_eq!((on("FARGATE"), on("FARGATE_SPOT")), (2, 6), "{o:#}");
    let calm = scale_run(stack, pw, ecs, attacker, &[]).await;
    let plan = [Disturbance::Spot, Disturbance::Spot, Disturbance::Kill];
    let rough = scale_run(stack, pw, ecs, attacker, &plan).await;
    let events = get_api(stack, pw, "/api/v1/events").await;
    let put_back_events: Vec<&serde_json::Value> = events["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("put back on the queue"))
        })
        .collect();
    let put_back: Vec<String> = put_back_events
        .iter()
        .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
        .collect();
    // Events are stamped in whole seconds.
    let last_put_back = put_back_events
        .iter()
        .filter_map(|e| e["at"].as_i64())
        .max()
        .unwrap_or_default();
    for (name, r) in [("undisturbed", &calm), ("disturbed", &rough)] {
        for (what, counts) in [("output", &r.outputs), ("completion", &r.completions)] {
            assert_eq!(
                counts.len(),
                SCALE_SUBTASKS,
                "{name}: every {what}: {counts:?}"
            );
            assert!(
                counts.values().all(|c| *c == 1),
                "{name}: each {what} once: {counts:?}\nput back: {put_back:#?}"
            );
        }
    }
    // The interrupted drained (exit 0, SpotInterruption); the killed one's
    // subtasks, and only they, were put back.
    for (d, id, _) in &rough.done {
        let t = ecs
            .describe_tasks()
            .cluster("fossa-wp")
            .tasks(id)
            .send()
            .await
            .unwrap();
        let t = &t.tasks()[0];
        let (code, exit) = (
            t.stop_code().map(|c| c.as_str().to_owned()),
            t.containers()[0].exit_code(),
        );
        match d {
            Disturbance::Spot => {
                assert_eq!(
                    (code.as_deref(), exit),
                    (Some("SpotInterruption"), Some(0)),
                    "{t:?}"
                )
            }
            Disturbance::Kill => assert_eq!(exit, Some(137), "{t:?}"),
        }
    }
    assert_eq!(
        put_back.len(),
        rough.killed_subtasks.len(),
        "{put_back:#?}\nkilled: {:?}",
        rough.killed_subtasks
    );
    let done: Vec<String> = rough
        .done
        .iter()
        .map(|(d, id, at)| format!("{d:?} {id} at {at:.1} s"))
        .collect();
    eprintln!(
        "FIGURE emulator, {SCALE_SUBTASKS} subtasks of {SCALE_WORK_SECS} s on 8 workers (2 Fargate, 6 Spot; fleet up in {up:?}): makespan {:.1} s undisturbed, {:.1} s with {} (ratio {:.2}); {} subtasks put back; outputs {SCALE_SUBTASKS} once each, completions {SCALE_SUBTASKS} once each, parents complete 2 of 2",
        calm.makespan.as_secs_f64(),
        rough.makespan.as_secs_f64(),
        done.join(", "),
        rough.makespan.as_secs_f64() / calm.makespan.as_secs_f64(),
        put_back.len()
    );
    eprintln!(
        "FIGURE emulator: a busy worker killed with -9 -> STOPPED {:.1} s later (the emulator's watch); STOPPED -> its {} subtasks put back on the queue {:.0} s (events in whole seconds), running again {:.1} s (nodes take put-back subtasks before the task queue's backlog; goal <= 15 s)",
        rough.kill_to_stopped.unwrap_or_default(),
        rough.killed_subtasks.len(),
        last_put_back as f64 - rough.stopped_at.unwrap_or_default(),
        rough.stopped_to_again.unwrap_or_default()
    );
    // Back to the burst's settings for what follows.
    stack.rerun(BURST_SETTINGS);
}
