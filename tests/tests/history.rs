//! The task history and the queue, with real parts: `fossa-agent local`
//! with a real Fossa node and RabbitMQ. A partitioned model's parent and
//! subtasks stay on its page after the agent and its workers restart; with
//! every slot busy, submissions queue (202, with positions), a full queue
//! gets 429, and a SIGKILLed agent keeps its queue, sends each queued task
//! once after the restart and marks the tasks its killed workers ran as
//! lost; a crash at each queue fault point sends nothing twice. The history
//! pages, filters and exports are read back.

use std::time::Duration;

use fossa_contract::fault::{Point, EXIT_AT};
use fossa_tests::local::{api, page, LocalAgent};
use fossa_tests::{eventually, TempDir};
use serde_json::{json, Value};

/// The models: the built-in examples plus `NapEtl`, whose `nap` holds a slot.
fn models() -> TempDir {
    let dir = TempDir::new("history-models");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../agent/models/example_etl.py"
        ),
        dir.0.join("example_etl.py"),
    )
    .unwrap();
    std::fs::write(
        dir.0.join("nap.py"),
        r#""""A model whose `nap` holds a worker slot for a while."""
import time

import ayeaye


class NapEtl(ayeaye.Model):
    def build(self):
        pass

    def nap(self, seconds, tag):
        time.sleep(seconds)
        return {"tag": tag}
"#,
    )
    .unwrap();
    dir
}

fn nap(seconds: u32, tag: u32) -> Value {
    json!({"model_class": "NapEtl", "method": "nap", "method_kwargs": {"seconds": seconds, "tag": tag}})
}

/// The one worker's task slots.
async fn slots(agent: &LocalAgent) -> u32 {
    let (_, ws) = api(agent, "GET", "/api/v1/workers", None).await;
    ws["workers"][0]["node"]["max_concurrent_tasks"]
        .as_u64()
        .expect("the worker reports its slots") as u32
}

/// Fills every slot with a nap; their tags are `0..slots`.
async fn fill(agent: &LocalAgent, slots: u32, seconds: u32) {
    for tag in 0..slots {
        let (status, v) = api(agent, "POST", "/api/v1/tasks", Some(&nap(seconds, tag))).await;
        assert_eq!(status, 201, "slot {tag}: {v}");
    }
    // The node lists them, so the snapshot shows no free slot.
    eventually("the slots filling", Duration::from_secs(20), async || {
        let (_, ws) = api(agent, "GET", "/api/v1/workers", None).await;
        if ws["workers"][0]["node"]["available_processing_capacity"] == 0 {
            return Ok(());
        }
        Err(ws)
    })
    .await;
}

/// Every history row (newest first).
async fn history(agent: &LocalAgent, filter: &str) -> Vec<Value> {
    let (status, v) = api(
        agent,
        "GET",
        &format!("/api/v1/tasks?limit=10000{filter}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v["tasks"].as_array().unwrap().clone()
}

/// History rows of naps with `tag`.
fn naps_tagged(rows: &[Value], tag: u32) -> Vec<Value> {
    rows.iter()
        .filter(|r| r["model_class"] == "NapEtl" && r["method_kwargs"]["tag"] == tag)
        .cloned()
        .collect()
}

async fn wait_for(
    agent: &LocalAgent,
    what: &str,
    within: Duration,
    mut ok: impl AsyncFnMut() -> bool,
) {
    eventually(what, within, async || match ok().await {
        true => Ok(()),
        false => Err(agent.log()),
    })
    .await;
}

async fn events(agent: &LocalAgent) -> String {
    let (_, ev) = api(agent, "GET", "/api/v1/events", None).await;
    ev.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn history_and_queue_survive_a_killed_agent_and_nothing_runs_twice() {
    let models = models();
    let dir = models.0.display().to_string();
    // This test is about the queue's crash safety: a task lost with its
    // worker stays lost here (--parent-retries 0); autoscale.rs shows the
    // default, a lost task submitted again once.
    let args = [
        "--models",
        dir.as_str(),
        "--queue-max",
        "3",
        "--parent-retries",
        "0",
    ];
    let mut agent = LocalAgent::start(1, &args);

    // A partitioned model: its parent and 8 subtasks are recorded.
    let (status, sent) = api(
        &agent,
        "POST",
        "/api/v1/tasks",
        Some(&json!({"model_class": "QuickPartitionedEtl"})),
    )
    .await;
    assert_eq!(status, 201, "{sent}");
    let parent = sent["task_id"].as_str().unwrap().to_owned();
    wait_for(
        &agent,
        "the partitioned model finishes with 8 subtasks",
        Duration::from_secs(90),
        async || {
            let (_, v) = api(&agent, "GET", &format!("/api/v1/tasks/{parent}"), None).await;
            v["task"]["status"] == "complete"
                && v["groups"][0]["subtasks"]
                    .as_array()
                    .is_some_and(|s| s.len() == 8)
        },
    )
    .await;

    // The worker's output is kept and served, and shown on the task's page.
    let (status, v) = api(&agent, "GET", "/api/v1/workers/local-1/logs?limit=50", None).await;
    assert_eq!(status, 200, "{v}");
    let lines = v["lines"].as_array().unwrap();
    assert!(!lines.is_empty(), "the worker logged something: {v}");
    let since = v["next_since"].as_i64().unwrap();
    let (_, v) = api(
        &agent,
        "GET",
        &format!("/api/v1/workers/local-1/logs?since={since}"),
        None,
    )
    .await;
    assert!(
        v["lines"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["at"].as_i64().unwrap() > since),
        "{v}"
    );
    let (status, text) = page(&agent, "/workers/local-1/logs.txt").await;
    assert_eq!(status, 200);
    assert!(text.lines().count() >= lines.len().min(50), "{text}");
    let (_, html) = page(&agent, &format!("/tasks/{parent}")).await;
    assert!(html.contains("Worker output during this task"), "{html}");
    let (_, html) = page(&agent, "/workers/local-1").await;
    assert!(html.contains("class=\"log\""), "{html}");

    // Every slot busy: the next three queue, in order; a fourth finds the queue full.
    let n = slots(&agent).await;
    fill(&agent, n, 30).await;
    let mut queued = Vec::new();
    for (k, tag) in (100..103).enumerate() {
        let (status, v) = api(&agent, "POST", "/api/v1/tasks", Some(&nap(1, tag))).await;
        assert_eq!(status, 202, "queued, not 503: {v}");
        assert_eq!(v["queued"]["position"], k as u64 + 1, "{v}");
        queued.push(v["queued"]["id"].as_i64().unwrap());
    }
    let (status, v) = api(&agent, "POST", "/api/v1/tasks", Some(&nap(1, 999))).await;
    assert_eq!(status, 429, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("queue is full"),
        "{v}"
    );
    let (status, v) = api(&agent, "GET", &format!("/api/v1/queue/{}", queued[1]), None).await;
    assert_eq!(status, 200);
    assert_eq!(v["state"], "waiting", "{v}");
    assert_eq!(v["detail"]["position"], 2, "{v}");
    let (_, html) = page(&agent, "/tasks").await;
    assert!(
        html.contains("3 waiting for a free slot"),
        "the tasks page shows the queue"
    );
    let (_, html) = page(&agent, &format!("/queue/{}", queued[2])).await;
    assert!(html.contains("position 3 of 3"), "{html}");
    // A cancelled one leaves the queue, and makes room for another.
    let (status, v) = api(
        &agent,
        "DELETE",
        &format!("/api/v1/queue/{}", queued[2]),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = api(&agent, "POST", "/api/v1/tasks", Some(&nap(1, 103))).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["queued"]["position"], 3, "{v}");
    queued[2] = v["queued"]["id"].as_i64().unwrap();
    let tags = [100, 101, 103];

    // SIGKILL: the workers and the broker are left running, as after a crash.
    agent.kill9();
    agent.spawn(1, &args, &[]);
    agent.wait_output("all 1 workers ready", Duration::from_secs(180));
    assert!(
        agent.log().contains("stopped") && agent.log().contains("earlier run left"),
        "the new run stops what the killed one left:\n{}",
        agent.log()
    );
    // The queue was kept and is sent, each once, to the fresh worker.
    wait_for(
        &agent,
        "the three queued naps complete",
        Duration::from_secs(60),
        async || {
            let rows = history(&agent, "&model=NapEtl").await;
            tags.iter().all(|t| {
                naps_tagged(&rows, *t)
                    .iter()
                    .any(|r| r["status"] == "complete")
            })
        },
    )
    .await;
    let ev = events(&agent).await;
    assert!(
        ev.contains("3 queued tasks kept from before the restart"),
        "{ev}"
    );
    let rows = history(&agent, "").await;
    for tag in tags {
        let runs = naps_tagged(&rows, tag);
        assert_eq!(runs.len(), 1, "queued nap {tag} ran once: {runs:?}");
    }
    assert!(
        naps_tagged(&rows, 102).is_empty(),
        "the cancelled nap never ran"
    );
    for id in &queued {
        let (_, v) = api(&agent, "GET", &format!("/api/v1/queue/{id}"), None).await;
        assert_eq!(v["state"], "left", "{v}");
        assert_eq!(v["detail"]["status"], "complete", "{v}");
    }
    // The naps that ran on the killed worker are lost, with the reason; none ran again.
    wait_for(
        &agent,
        "the naps of the killed worker are marked lost",
        Duration::from_secs(30),
        async || {
            let rows = history(&agent, "&status=lost").await;
            let noted = |r: &Value| {
                r["results"]["payload"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("not submitted again"))
            };
            (0..n).all(|t| naps_tagged(&rows, t).iter().any(noted))
        },
    )
    .await;
    let lost = history(&agent, "&status=lost").await;
    assert!(
        lost[0]["results"]["payload"]["reason"]
            .as_str()
            .unwrap()
            .contains("restarted"),
        "{}",
        lost[0]
    );
    assert!(
        lost[0]["results"]["payload"]["reason"]
            .as_str()
            .unwrap()
            .contains("not submitted again (parent_retries is 0)"),
        "{}",
        lost[0]
    );
    let rows = history(&agent, "").await;
    for tag in 0..n {
        assert_eq!(
            naps_tagged(&rows, tag).len(),
            1,
            "nap {tag} was not sent again"
        );
    }

    // The partitioned model's page still shows its 8 subtasks, from the
    // history: the node that ran them is gone.
    let (status, v) = api(&agent, "GET", &format!("/api/v1/tasks/{parent}"), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["groups"][0]["subtasks"].as_array().unwrap().len(),
        8,
        "{v}"
    );
    let (status, html) = page(&agent, &format!("/tasks/{parent}")).await;
    assert_eq!(status, 200);
    assert!(html.contains("8 subtasks"), "{html}");

    // Pages, filters and exports.
    let (_, p1) = api(&agent, "GET", "/api/v1/tasks?limit=5", None).await;
    assert_eq!(p1["tasks"].as_array().unwrap().len(), 5);
    let next = p1["links"]["next"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (_, p2) = api(&agent, "GET", &next, None).await;
    assert_ne!(p1["tasks"][0], p2["tasks"][0]);
    let total = p1["total"].as_u64().unwrap();
    assert!(total >= 1 + 8 + u64::from(n) + 3, "{total}");
    let (status, csv) = page(
        &agent,
        "/api/v1/tasks/export?format=csv&model=QuickPartitionedEtl",
    )
    .await;
    assert_eq!(status, 200);
    assert!(csv.starts_with("task_id,model_class"), "{csv}");
    assert_eq!(
        csv.lines().count(),
        1 + 9,
        "a header, the parent and its 8 subtasks:\n{csv}"
    );
    assert!(csv.contains(&parent));
    let (_, json_text) = page(&agent, "/api/v1/tasks/export?format=json").await;
    let all: Vec<Value> = serde_json::from_str(&json_text).unwrap();
    let (_, again) = api(&agent, "GET", "/api/v1/tasks?limit=1", None).await;
    assert_eq!(all.len() as u64, again["total"].as_u64().unwrap());
    let (status, v) = api(&agent, "GET", "/api/v1/tasks?status=<b>", None).await;
    assert_eq!(status, 400, "{v}");

    // A crash at each queue fault point sends nothing twice.
    for (k, point) in Point::QUEUE.into_iter().enumerate() {
        agent.interrupt();
        let fault = point.name();
        agent.spawn(1, &args, &[(EXIT_AT, fault.as_str())]);
        agent.wait_output("all 1 workers ready", Duration::from_secs(180));
        fill(&agent, n, 4).await;
        let tag = 200 + k as u32;
        let (status, v) = api(&agent, "POST", "/api/v1/tasks", Some(&nap(1, tag))).await;
        assert_eq!(status, 202, "{v}");
        let id = v["queued"]["id"].as_i64().unwrap();
        assert_eq!(
            agent.wait_exit(Duration::from_secs(60)),
            137,
            "the agent dies at {fault}"
        );
        agent.spawn(1, &args, &[]);
        agent.wait_output("all 1 workers ready", Duration::from_secs(180));
        let (_, v) = api(&agent, "GET", &format!("/api/v1/queue/{id}"), None).await;
        assert_eq!(v["state"], "left", "{fault}: {v}");
        assert_eq!(v["detail"]["status"], "unknown", "{fault}: {v}");
        assert!(
            v["detail"]["results"]["payload"]["reason"]
                .as_str()
                .unwrap()
                .contains("not sent again"),
            "{v}"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        let runs: Vec<_> = naps_tagged(&history(&agent, "&model=NapEtl").await, tag)
            .into_iter()
            .filter(|r| r["status"] != "unknown")
            .collect();
        let most = if point == Point::QueueSending { 0 } else { 1 };
        assert!(
            runs.len() <= most,
            "{fault}: nap {tag} ran {} times: {runs:?}",
            runs.len()
        );
        eprintln!(
            "FIGURE queue crash at {fault}: marked unknown, ran {} time(s)",
            runs.len()
        );
    }
    assert_eq!(agent.interrupt(), 0);
}

/// Files the history set aside (`history.sqlite3.damaged-…`, or the older
/// agents' `.unreadable-…`).
fn set_aside(state: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(state)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            n.starts_with("history.sqlite3.") && !n.ends_with("-wal") && !n.ends_with("-shm")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_history_is_never_set_aside_for_a_lock_or_a_full_disk() {
    let models = models();
    let dir = models.0.display().to_string();
    let args = ["--models", dir.as_str()];
    let mut agent = LocalAgent::prepared();
    let state = agent.state.0.join("state");
    let disk = fossa_tests::SmallDisk::mount(&state, "160m");
    agent.spawn(1, &args, &[]);
    agent.wait_output("all 1 workers ready", Duration::from_secs(180));
    let (status, v) = api(&agent, "POST", "/api/v1/tasks", Some(&nap(1, 1))).await;
    assert_eq!(status, 201, "{v}");
    wait_for(
        &agent,
        "the first nap recorded",
        Duration::from_secs(60),
        async || {
            naps_tagged(&history(&agent, "").await, 1)
                .first()
                .is_some_and(|r| r["status"] == "complete")
        },
    )
    .await;
    assert_eq!(agent.interrupt(), 0);

    // Another process holds the history's lock as the agent starts, longer
    // than SQLite's busy timeout (5 s) from the moment the agent opens it,
    // and at least 10 s: the agent waits for it, and keeps the history.
    let history_file = state.join("history.sqlite3");
    let mut locker = std::process::Command::new(fossa_tests::venv_bin("python"))
        .args([
            "-c",
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('PRAGMA locking_mode=EXCLUSIVE')\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             c.execute(\"DELETE FROM settings WHERE key = 'none'\")\n\
             print('held', flush=True)\n\
             sys.stdin.read()\n\
             c.execute('COMMIT')\n",
        ])
        .arg(&history_file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut held = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(locker.stdout.as_mut().unwrap()),
        &mut held,
    )
    .unwrap();
    assert_eq!(held.trim(), "held");
    let t = std::time::Instant::now();
    agent.spawn(1, &args, &[]);
    agent.wait_log_since(0, &["locked by another process"], Duration::from_secs(120));
    let waiting = t.elapsed();
    std::thread::sleep(
        Duration::from_secs(10)
            .saturating_sub(waiting)
            .max(Duration::from_secs(3)),
    );
    drop(locker.stdin.take());
    assert!(locker.wait().unwrap().success());
    let released = t.elapsed();
    agent.wait_output("all 1 workers ready", Duration::from_secs(180));
    eprintln!(
        "FIGURE history locked {released:?} from the agent's start (it said it waits after {waiting:?}) -> agent ready after {:?}",
        t.elapsed()
    );
    assert!(set_aside(&state).is_empty(), "{:?}", set_aside(&state));
    assert_eq!(
        naps_tagged(&history(&agent, "").await, 1).len(),
        1,
        "the history kept"
    );
    let (_, o) = api(&agent, "GET", "/api/v1/overview", None).await;
    assert_eq!(o["history"]["ok"], true, "{o:#}");

    // The disk fills while a task runs: its end is kept, said on the
    // History line, and written once there is room again.
    let (status, v) = api(&agent, "POST", "/api/v1/tasks", Some(&nap(6, 2))).await;
    assert_eq!(status, 201, "{v}");
    wait_for(
        &agent,
        "the second nap running",
        Duration::from_secs(30),
        async || {
            naps_tagged(&history(&agent, "").await, 2)
                .first()
                .is_some_and(|r| r["status"] == "running")
        },
    )
    .await;
    let filler = disk.fill();
    let mut line = String::new();
    wait_for(
        &agent,
        "the History line red",
        Duration::from_secs(60),
        async || {
            let (_, o) = api(&agent, "GET", "/api/v1/overview", None).await;
            line = o["history"]["detail"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            o["history"]["ok"] == false && line.contains("not yet written")
        },
    )
    .await;
    eprintln!("History line with the disk full: {line}");
    assert_eq!(
        naps_tagged(&history(&agent, "").await, 2)[0]["status"],
        "running",
        "not counted as recorded"
    );
    std::fs::remove_file(&filler).unwrap();
    let t = std::time::Instant::now();
    wait_for(
        &agent,
        "the end written, the line green",
        Duration::from_secs(60),
        async || {
            let (_, o) = api(&agent, "GET", "/api/v1/overview", None).await;
            o["history"]["ok"] == true
                && naps_tagged(&history(&agent, "").await, 2)
                    .first()
                    .is_some_and(|r| r["status"] == "complete")
        },
    )
    .await;
    eprintln!(
        "FIGURE room again -> the kept observations written: {:?}",
        t.elapsed()
    );
    assert!(set_aside(&state).is_empty(), "{:?}", set_aside(&state));
    assert_eq!(naps_tagged(&history(&agent, "").await, 1).len(), 1);
    assert_eq!(agent.interrupt(), 0);
}
