//! Local mode end to end with real parts: RabbitMQ from Debian, Fossa nodes
//! from the venv, the UI over TLS. A partitioned model submitted through the
//! API spreads its subtasks over several nodes; the task page groups them
//! under the parent; a killed worker is seen and restarted; a killed broker
//! is shown down and restarted, and work goes on; a worker whose port was
//! taken moves to a fresh one; no page, log or command line holds a secret;
//! Ctrl-C leaves no process or port behind.

use std::process::Command;
use std::time::{Duration, Instant};

use fossa_tests::docker::Dockerd;
use fossa_tests::images::PYTHON;
use fossa_tests::local::{
    api, broker_port, kill_group_of, listening_pid, page, port_of, LocalAgent,
};
use fossa_tests::secrets::{
    assert_absent, crawl, environ_of, every_command_line, url_password, Place,
};
use fossa_tests::{bin, eventually, holds, prometheus, venv_bin, Run, TempDir};
use serde_json::{json, Value};

async fn wait_complete(agent: &LocalAgent, id: &str, within: Duration) -> Value {
    eventually(&format!("task {id} finishing"), within, async || {
        let (status, v) = api(agent, "GET", &format!("/api/v1/tasks/{id}"), None).await;
        if status == 200
            && v["task"]["status"] != "running"
            && !v["groups"].as_array().is_none_or(|g| g.is_empty())
        {
            return Ok(v);
        }
        Err(format!("{v}\n{}", agent.log()))
    })
    .await
}

/// Submits the example partitioned model and waits until it is complete: its id and page.
async fn run_partitioned(agent: &LocalAgent, within: Duration) -> (String, Value) {
    let (status, sent) = api(
        agent,
        "POST",
        "/api/v1/tasks",
        Some(&json!({"model_class": "QuickPartitionedEtl"})),
    )
    .await;
    // Sent at once, or queued while every slot is busy (a task sent again
    // after the broker's restart may still hold one) and sent when one frees.
    let id = match status {
        201 => sent["task_id"].as_str().unwrap().to_owned(),
        202 => {
            let queued = sent["queued"]["id"].as_i64().unwrap();
            eventually("the queued task sent", within, async || {
                let path = format!("/api/v1/queue/{queued}");
                let (_, q) = api(agent, "GET", &path, None).await;
                match q["detail"]["task_id"].as_str() {
                    Some(id) => Ok(id.to_owned()),
                    None => Err(q.to_string()),
                }
            })
            .await
        }
        _ => panic!("{status}: {sent}"),
    };
    let detail = wait_complete(agent, &id, within).await;
    assert_eq!(detail["task"]["status"], "complete", "{detail}");
    (id, detail)
}

/// The pool's scenario, the same for process and container workers: worker
/// `local-1` has log lines; killed with `kill` (given its port), it is
/// reported, started again and answers; its log goes on after the restart.
async fn pool_scenario(agent: &LocalAgent, kill: impl Fn(u16)) {
    let lines = |v: &Value| v["lines"].as_array().map_or(0, Vec::len);
    let logs = "/api/v1/workers/local-1/logs?limit=10000";
    let before = eventually(
        "log lines of local-1",
        Duration::from_secs(60),
        async || {
            let (status, v) = api(agent, "GET", logs, None).await;
            if status == 200 && lines(&v) > 0 {
                return Ok(lines(&v));
            }
            Err(format!("{v}\n{}", agent.log()))
        },
    )
    .await;
    let (_, ws) = api(agent, "GET", "/api/v1/workers", None).await;
    let port: u16 = ws["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == "local-1")
        .and_then(|w| w["address"].as_str()?.rsplit(':').next()?.parse().ok())
        .expect("local-1 has an address");
    let killed = Instant::now();
    kill(port);
    let restarted = "local-1 restarted, answering, its log going on";
    eventually(restarted, Duration::from_secs(90), async || {
        let (_, ev) = api(agent, "GET", "/api/v1/events", None).await;
        let told = ev["events"].as_array().unwrap().iter().any(|e| {
            let m = e["message"].as_str().unwrap_or("");
            // Both launchers name the worker's id, then a space.
            m.contains("local-1 ") && m.contains("starting it again (restart 1)")
        });
        let (_, ws) = api(agent, "GET", "/api/v1/workers", None).await;
        let back = ws["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["id"] == "local-1" && w["health"]["state"] == "ok");
        let (_, v) = api(agent, "GET", logs, None).await;
        if told && back && lines(&v) > before {
            return Ok(());
        }
        Err(format!(
            "told {told}, back {back}, {} lines, {before} before\n{}",
            lines(&v),
            agent.log()
        ))
    })
    .await;
    eprintln!(
        "figures: local-1 killed, answering again with new log lines after {:?}",
        killed.elapsed()
    );
    // What a scraper gets: text promtool accepts, counting the workers the
    // API lists as answering (looked at again if a refresh came between).
    let answering = r#"fossa_workers{state="answering",capacity_provider="local"}"#;
    eventually(
        "/metrics agreeing with the API",
        Duration::from_secs(10),
        async || {
            let (status, text) = page(agent, "/metrics").await;
            assert_eq!(status, 200, "{text}");
            prometheus::check_metrics(&text)
                .unwrap_or_else(|said| panic!("promtool: {said}\n{text}"));
            let (_, ws) = api(agent, "GET", "/api/v1/workers", None).await;
            let ok = ws["workers"].as_array().unwrap().iter();
            let ok = ok.filter(|w| w["health"]["state"] == "ok").count() as f64;
            let said = prometheus::sample(&text, answering);
            holds(said == Some(ok), || {
                format!("API {ok}, metrics {said:?}:\n{text}")
            })
        },
    )
    .await;
}

fn processes_mentioning(needle: &str) -> Vec<String> {
    let out = Run::of(Command::new("ps").args(["-eo", "pid,args"])).stdout;
    out.lines()
        .filter(|l| l.contains(needle) && !l.contains("ps -eo"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_model_runs_across_local_workers() {
    let mut agent = LocalAgent::start(3, &[]);
    let out = agent.output();
    assert!(
        out.contains("QuickPartitionedEtl")
            && out.contains("TLS certificate SHA-256")
            && out.contains("--listen 0.0.0.0:"),
        "{out}"
    );
    assert!(
        !out.contains(&agent.password),
        "a password from GATEWAY_HTTP_PASSWORD is not printed"
    );

    let (status, workers) = api(&agent, "GET", "/api/v1/workers", None).await;
    assert_eq!(status, 200);
    let workers = workers["workers"].as_array().unwrap().clone();
    assert_eq!(workers.len(), 3);
    assert!(
        workers.iter().all(|w| w["health"]["state"] == "ok"),
        "{workers:?}"
    );

    pool_scenario(&agent, |port| {
        kill_group_of(listening_pid(port).expect("local-1 listens"));
    })
    .await;

    let (id, detail) = run_partitioned(&agent, Duration::from_secs(90)).await;
    let group = &detail["groups"][0];
    assert_eq!(group["subtasks"].as_array().unwrap().len(), 8, "{detail}");
    assert_eq!(group["certain"], true);
    let pool = group["pool_id"].as_str().unwrap().to_owned();

    // Each node's own node_info says which subtasks it ran.
    let http = reqwest::Client::new();
    let mut nodes_with_subtasks = 0;
    for w in &workers {
        // As the agent asks: with the token the worker was started with.
        let address = w["address"].as_str().unwrap();
        let port: u16 = address.rsplit(':').next().unwrap().parse().unwrap();
        let token = listening_pid(port)
            .and_then(|pid| environ_of(pid, fossa_contract::names::WORKER_TOKEN_ENV))
            .expect("the worker's token");
        let info: Value = http
            .get(format!("http://{address}/api/0.01/node_info"))
            .header(fossa_contract::names::WORKER_TOKEN_HEADER, token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ran = info["recent_completed_tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| {
                t["task_id"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{pool}:"))
            })
            .count();
        if ran > 0 {
            nodes_with_subtasks += 1;
        }
    }
    assert!(
        nodes_with_subtasks >= 2,
        "subtasks ran on {nodes_with_subtasks} node(s)"
    );

    let (status, html) = page(&agent, &format!("/tasks/{id}")).await;
    assert_eq!(status, 200);
    for n in 0..8 {
        assert!(
            html.contains(&format!("{pool}:{n}")),
            "subtask {n} missing from the task page"
        );
    }
    assert!(html.contains("TaskComplete"), "results are shown");

    // A real Prometheus scrapes the gateway with the shipped config and the
    // scraper's token; its count of subtasks completed is the history's.
    let tls = agent.state.0.join("state/tls");
    let prom = fossa_tests::prometheus::Prometheus::start(
        &format!("127.0.0.1:{}", agent.port),
        &tls.join("metrics-token"),
        &tls.join("cert.pem"),
    );
    let scraped = "Prometheus's subtasks completed equal to the history's";
    eventually(scraped, Duration::from_secs(60), async || {
        let (_, rows) = api(
            &agent,
            "GET",
            "/api/v1/tasks?status=complete&limit=1000",
            None,
        )
        .await;
        let rows = rows["tasks"].as_array().cloned().unwrap_or_default();
        let history = rows
            .iter()
            .filter(|r| r["task_id"].as_str().unwrap_or_default().contains("::"))
            .count() as f64;
        let said = prom
            .query(r#"sum(fossa_tasks_completed_total{kind="subtask"})"#)
            .await;
        if history >= 8.0 && said.as_ref().ok() == Some(&history) {
            return Ok(());
        }
        Err(format!(
            "history {history}, Prometheus {said:?}; targets {}",
            prom.target().await
        ))
    })
    .await;
    eprintln!("figures: Prometheus scraped the subtasks completed with the scraper's token");

    // A worker killed mid-run is reported and restarted.
    let (_, sent) = api(
        &agent,
        "POST",
        "/api/v1/tasks",
        Some(&json!({"model_class": "QuickPartitionedEtl"})),
    )
    .await;
    assert!(sent["task_id"].is_string());
    let victim = &workers[1];
    let port = port_of(victim);
    let listener = listening_pid(port).expect("the worker listens");
    // The node's main process leads its process group; gunicorn's workers share the socket.
    let pgid = Run::of(Command::new("ps").args(["-o", "pgid=", "-p", &listener.to_string()]))
        .ok()
        .stdout
        .trim()
        .to_owned();
    let pid: u32 = pgid.parse().unwrap();
    Run::of(Command::new("kill").args(["-9", &pid.to_string()])).ok();
    let victim_id = victim["id"].as_str().unwrap().to_owned();
    let restarted = "the killed worker reported and restarted";
    eventually(restarted, Duration::from_secs(60), async || {
        let (_, ev) = api(&agent, "GET", "/api/v1/events", None).await;
        let seen = ev["events"].as_array().unwrap().iter().any(|e| {
            e["message"]
                .as_str()
                .unwrap()
                .contains(&format!("worker {victim_id} exited"))
        });
        let (_, ws) = api(&agent, "GET", "/api/v1/workers", None).await;
        let back = ws["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["id"] == victim_id.as_str() && w["health"]["state"] == "ok");
        if seen && back && listening_pid(port).is_some_and(|p| p != listener) {
            return Ok(());
        }
        Err(format!("seen {seen}, back {back}\n{}", agent.log()))
    })
    .await;
    let (_, html) = page(&agent, "/events").await;
    assert!(
        html.contains(&format!("worker {victim_id} exited")),
        "the events page shows the crash"
    );

    // Scaling starts and stops worker processes.
    for (want, label) in [(4usize, "up"), (2, "down")] {
        let (status, v) = api(
            &agent,
            "POST",
            "/api/v1/scale",
            Some(&json!({ "workers": want })),
        )
        .await;
        assert_eq!(status, 200, "scale {label}: {v}");
        let settled = format!("scaling {label} to {want} settling");
        eventually(&settled, Duration::from_secs(60), async || {
            let (_, ws) = api(&agent, "GET", "/api/v1/workers", None).await;
            let ws = ws["workers"].as_array().unwrap().clone();
            if ws.len() == want && ws.iter().all(|w| w["health"]["state"] == "ok") {
                return Ok(());
            }
            Err(format!("{ws:?}"))
        })
        .await;
    }

    // A broker killed with -9 shows down on the overview at once, is back
    // within 30 s on the same address, and the nodes take work again.
    let overview = |v: &Value| (v["broker"]["ok"].as_bool(), v["broker"]["detail"].clone());
    let (_, v) = api(&agent, "GET", "/api/v1/overview", None).await;
    assert_eq!(overview(&v).0, Some(true), "{v}");
    let broker_port = broker_port(&v);
    let beam = listening_pid(broker_port).expect("RabbitMQ listens");
    let killed = Instant::now();
    Run::of(Command::new("kill").args(["-9", &beam.to_string()])).ok();
    let mut down_after = None;
    let what = "the broker shown down and back";
    eventually(what, Duration::from_secs(30), async || {
        let (_, v) = api(&agent, "GET", "/api/v1/overview", None).await;
        match overview(&v) {
            (Some(false), _) if down_after.is_none() => down_after = Some(killed.elapsed()),
            (Some(true), _) if down_after.is_some() => return Ok(()),
            _ => {}
        }
        Err(format!("down after {down_after:?}: {v}\n{}", agent.log()))
    })
    .await;
    let back_after = killed.elapsed();
    let down_after = down_after.unwrap();
    assert!(
        down_after < Duration::from_secs(5),
        "shown down after {down_after:?}"
    );
    eprintln!("broker killed: shown down after {down_after:?}, back after {back_after:?}");
    assert!(listening_pid(broker_port).is_some_and(|p| p != beam));
    let (_, ev) = api(&agent, "GET", "/api/v1/events", None).await;
    assert!(
        ev["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["error"] == true && e["message"].as_str().unwrap().contains("restarted it")),
        "the restart is an event: {ev}"
    );
    // A task running when the broker went was cut off and is sent again; it
    // runs first, or its subtasks' group is listed beside this one's (the
    // page then cannot be certain which group is whose).
    eventually("no task running", Duration::from_secs(120), async || {
        let (_, v) = api(&agent, "GET", "/api/v1/tasks?status=running", None).await;
        holds(v["tasks"].as_array().is_some_and(Vec::is_empty), || {
            format!("{v}\n{}", agent.log())
        })
    })
    .await;
    let (id, _) = run_partitioned(&agent, Duration::from_secs(120)).await;
    // Its last subtasks may be recorded a poll after it.
    eventually(
        "its 8 subtasks recorded",
        Duration::from_secs(10),
        async || {
            let (_, d) = api(&agent, "GET", &format!("/api/v1/tasks/{id}"), None).await;
            let group = &d["groups"][0];
            let n = group["subtasks"].as_array().map_or(0, Vec::len);
            holds(n == 8 && group["certain"] == true, || d.to_string())
        },
    )
    .await;

    // Secrets: the UI password and the broker's credentials are on no page,
    // API reply, log or command line.
    let (_, current) = api(&agent, "GET", "/api/v1/workers", None).await;
    let first_port = current["workers"][0]["address"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap();
    let node = listening_pid(first_port.parse().unwrap()).expect("a worker listens");
    let broker_url = environ_of(node, "RABBITMQ_URL").expect("workers get RABBITMQ_URL");
    let broker_password = url_password(&broker_url);
    let worker_token = environ_of(node, fossa_contract::names::WORKER_TOKEN_ENV)
        .expect("workers get their API token");
    let mut places = crawl(&agent.url, &agent.password, 400).await;
    // Workers killed or scaled away took their task history with them; the
    // ones left still hold parents and subtasks.
    let task_page = |subtask: bool| {
        places
            .iter()
            .any(|p| p.name.starts_with("GET /tasks/") && p.name.contains("::") == subtask)
    };
    assert!(
        task_page(true) && task_page(false),
        "the crawl reached parent and subtask pages: {:?}",
        places.iter().map(|p| &p.name).collect::<Vec<_>>()
    );
    places.push(Place::new("the agent's log", agent.log()));
    places.push(Place::new("the agent's output", agent.output()));
    for f in std::fs::read_dir(agent.state.0.join("state/logs"))
        .unwrap()
        .flatten()
    {
        let text = String::from_utf8_lossy(&std::fs::read(f.path()).unwrap()).into_owned();
        places.push(Place::new(f.path().display().to_string(), text));
    }
    places.push(every_command_line());
    assert_absent(
        &[
            ("UI password", agent.password.as_str()),
            ("broker URL", broker_url.as_str()),
            ("broker password", broker_password.as_str()),
            ("workers' API token", worker_token.as_str()),
        ],
        &places,
    );

    // Another account of this machine reaching a worker's Fossa API on the
    // loopback (here: curl without the token) is refused; the agent's token
    // opens it.
    let node_info = format!("http://127.0.0.1:{first_port}/api/0.01/node_info");
    let status = |extra: &[&str]| {
        let mut c = std::process::Command::new("curl");
        c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(extra)
            .arg(&node_info);
        fossa_tests::Run::of(&mut c).stdout
    };
    assert_eq!(status(&[]), "401", "a worker answered without the token");
    assert_eq!(status(&["-H", "x-fossa-token: wrong"]), "401");
    let header = format!("x-fossa-token: {worker_token}");
    assert_eq!(status(&["-H", &header]), "200");

    // A worker whose port was taken while it was down moves to a fresh one.
    let (_, ws) = api(&agent, "GET", "/api/v1/workers", None).await;
    let victim = ws["workers"][0].clone();
    let old_address = victim["address"].as_str().unwrap().to_owned();
    let old_port: u16 = old_address.rsplit(':').next().unwrap().parse().unwrap();
    let pid = listening_pid(old_port).expect("the worker listens");
    kill_group_of(pid);
    let squatter = {
        // Not `eventually`: this races the worker's restart for the port, so
        // it looks every 5 ms, not with the polls' back-off.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", old_port)) {
                break l;
            }
            assert!(Instant::now() < deadline, "port {old_port} never freed");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    eventually(
        "the worker moving off its taken port",
        Duration::from_secs(60),
        async || {
            let (_, ws) = api(&agent, "GET", "/api/v1/workers", None).await;
            let moved = ws["workers"].as_array().unwrap().iter().any(|w| {
                w["id"] == victim["id"]
                    && w["address"] != old_address.as_str()
                    && w["health"]["state"] == "ok"
            });
            if moved {
                return Ok(());
            }
            Err(format!("{ws}\n{}", agent.log()))
        },
    )
    .await;
    drop(squatter);

    // Ctrl-C stops everything it started.
    let state = agent.state.0.display().to_string();
    let ports: Vec<u16> = workers
        .iter()
        .map(|w| {
            w["address"]
                .as_str()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(
        !processes_mentioning(&state).is_empty(),
        "workers and broker run from the state dir"
    );
    assert_eq!(agent.interrupt(), 0);
    let left = processes_mentioning(&state);
    assert!(left.is_empty(), "left running: {left:?}");
    for p in ports.iter().chain([agent.port].iter()) {
        assert!(listening_pid(*p).is_none(), "port {p} still listens");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_run_the_real_worker_image() {
    let dockerd = Dockerd::start();
    let base = PYTHON.import(&dockerd);
    let t = Instant::now();
    let mut agent = LocalAgent::start_with(
        2,
        &["--containers", "--base-image", &base],
        &[("DOCKER_HOST", &dockerd.host)],
    );
    let ready = t.elapsed();
    let ours = || {
        Run::of(dockerd.cli().args([
            "ps",
            "-a",
            "--filter",
            "label=fossa.local",
            "--format",
            "{{.Names}} {{.Image}} {{.State}}",
        ]))
        .ok()
        .stdout
    };
    let ps = ours();
    assert_eq!(ps.lines().count(), 2, "{ps}");
    assert!(
        ps.lines()
            .all(|l| l.contains("fossa-local-worker:ctx-") && l.ends_with("running")),
        "{ps}"
    );
    let (_, v) = api(&agent, "GET", "/api/v1/overview", None).await;
    assert!(
        v["image"]["detail"]
            .as_str()
            .unwrap()
            .contains("fossa-local-worker:ctx-"),
        "{v}"
    );
    let (_, detail) = run_partitioned(&agent, Duration::from_secs(120)).await;
    assert_eq!(
        detail["groups"][0]["subtasks"].as_array().unwrap().len(),
        8,
        "{detail}"
    );
    pool_scenario(&agent, |_| {
        let name = ours()
            .lines()
            .map(|l| l.split(' ').next().unwrap_or("").to_owned())
            .find(|n| n.ends_with("-1"))
            .expect("the container of local-1");
        Run::of(dockerd.cli().args(["kill", &name])).ok();
    })
    .await;
    eprintln!("figures: local mode with 2 containers of a freshly built worker image answering {ready:?} after start");
    assert_eq!(agent.interrupt(), 0);
    assert_eq!(ours(), "", "Ctrl-C removes the containers");
}

#[test]
fn bad_local_arguments_get_one_clear_line() {
    let models = TempDir::new("badmodels");
    std::fs::write(models.0.join("broken.py"), "this is not python\n").unwrap();
    let empty = TempDir::new("nomodels");
    std::fs::write(empty.0.join("plain.py"), "X = 1\n").unwrap();
    let unmet = TempDir::new("unmetmodels");
    std::fs::write(
        unmet.0.join("etl.py"),
        "import ayeaye\n\nclass E(ayeaye.Model):\n    pass\n",
    )
    .unwrap();
    std::fs::write(
        unmet.0.join("requirements.txt"),
        "fossa-no-such-package==9.9.9\n",
    )
    .unwrap();
    let state = TempDir::new("badstate");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--workers".into(), "0".into()], "--workers"),
        (vec!["--listen".into(), "nowhere".into()], "--listen"),
        (vec!["--base-image".into(), "python".into()], "--containers"),
        (
            vec!["--models".into(), "/nonexistent/models".into()],
            "not a directory",
        ),
        (
            vec!["--models".into(), models.0.display().to_string()],
            "do not import",
        ),
        (
            vec!["--models".into(), models.0.display().to_string()],
            "broken.py\", line 1, in <module>: NameError",
        ),
        (
            vec!["--models".into(), unmet.0.display().to_string()],
            "No matching distribution found for fossa-no-such-package==9.9.9",
        ),
        (
            vec!["--models".into(), empty.0.display().to_string()],
            "no Aye-Aye model classes",
        ),
        (
            vec!["--python".into(), "/nonexistent/python3".into()],
            "venv",
        ),
    ];
    for (args, needle) in cases {
        let mut c = Command::new(bin("fossa-agent"));
        c.arg("local").args(&args).arg("--state-dir").arg(&state.0);
        if !args.contains(&"--python".to_owned()) {
            c.arg("--python").arg(venv_bin("python"));
        }
        let r = Run::of(&mut c);
        assert_ne!(r.code, 0, "{args:?}");
        assert!(
            r.stderr.contains(needle),
            "{args:?}: expected {needle:?} in {}",
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
}

/// A field of `/proc/PID/status` (its first value).
fn proc_status(pid: u32, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process runs");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.split_whitespace().next().unwrap_or_default().to_owned())
        .unwrap_or_else(|| panic!("no {key} in {text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_process_serving_the_ui_holds_no_privilege_and_comes_back_when_killed() {
    let agent = LocalAgent::start(1, &[]);
    // The process that accepts UI connections is not the agent.
    let ui = listening_pid(agent.port).expect("the UI listens");
    assert_ne!(ui, agent.pid(), "the agent itself accepts UI connections");
    let cmdline = std::fs::read(format!("/proc/{ui}/cmdline")).unwrap();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert_eq!(
        args.get(1).map(String::as_str),
        Some("ui-serve"),
        "{args:?}"
    );
    // As root (as here), it became another user; in any case it holds no
    // capability, may gain none, and runs under a seccomp filter.
    if nix::unistd::getuid().is_root() {
        assert_ne!(proc_status(ui, "Uid"), "0", "the UI process runs as root");
        assert_ne!(proc_status(ui, "Gid"), "0");
        assert_eq!(proc_status(ui, "Groups"), "", "supplementary groups kept");
    }
    assert_eq!(proc_status(ui, "CapEff"), "0000000000000000");
    assert_eq!(proc_status(ui, "CapPrm"), "0000000000000000");
    assert_eq!(proc_status(ui, "NoNewPrivs"), "1");
    assert_eq!(proc_status(ui, "Seccomp"), "2");
    // The same confinement, with the arguments the agent gave it, tries
    // what code run through a hole in the UI would try.
    let probe = Run::of(
        Command::new(bin("fossa-agent"))
            .args(&args[1..])
            .arg("--probe"),
    );
    let report = probe.stdout;
    for what in [
        "uid 0",
        "docker socket",
        "run iptables",
        "run a shell",
        "netlink socket",
        "signal the agent",
        "raw IP socket",
    ] {
        let line = report
            .lines()
            .find(|l| l.starts_with(&format!("{what}:")))
            .unwrap_or_else(|| panic!("no {what} in {report}"));
        let expect_refused = what != "uid 0" || nix::unistd::getuid().is_root();
        assert_eq!(line.contains(": refused"), expect_refused, "{line}");
        if what != "uid 0" {
            // Refused by the filter, not for want of a file.
            assert!(line.contains("os error 1)"), "{line}");
        }
    }
    // A second local agent on the same state directory is refused at once
    // (it would take this one's workers for leftovers and stop them).
    let second = Run::of(
        Command::new(bin("fossa-agent"))
            .args(["local", "--workers", "1", "--listen"])
            .arg(format!("127.0.0.1:{}", fossa_tests::free_port()))
            .arg("--python")
            .arg(venv_bin("python"))
            .arg("--state-dir")
            .arg(agent.state.0.join("state")),
    );
    assert_ne!(second.code, 0);
    assert!(
        second.stderr.contains("another fossa-agent local runs on"),
        "{}",
        second.stderr
    );
    let (status, w) = api(&agent, "GET", "/api/v1/workers", None).await;
    assert_eq!(status, 200);
    assert_eq!(w["workers"][0]["health"]["state"], "ok", "{w}");
    // Killed, it comes back by itself, and the UI answers again.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ui as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let started = Instant::now();
    eventually("a new UI process", Duration::from_secs(30), async || {
        let now = listening_pid(agent.port);
        holds(now.is_some_and(|p| p != ui), || format!("{now:?}"))?;
        let (status, _) = api(&agent, "GET", "/api/v1/overview", None).await;
        holds(status == 200, || format!("HTTP {status}"))
    })
    .await;
    println!(
        "the UI answered again {:.1} s after its process was killed",
        started.elapsed().as_secs_f64()
    );
    assert!(agent.log().contains("the web UI process ended"), "no event");
}
