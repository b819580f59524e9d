//! Autoscaling in local mode with real parts (Fossa nodes, RabbitMQ): a
//! fleet at zero queues a submission, starts a worker for it, grows to the
//! maximum as the partitioned model's 40 subtasks wait in the broker,
//! finishes everything, never stops a busy worker, and goes back to zero
//! after the idle window. Every decision is an event with its reason.

use std::time::{Duration, Instant};

use fossa_tests::local::{api, kill_group_of, listening_pid, port_of, submit, workers, LocalAgent};
use fossa_tests::{eventually, holds, TempDir};
use serde_json::{json, Value};

/// A models directory holding one partitioned model, `class`: `parts`
/// subtasks, each sleeping `sleep` (a Python expression of `n`) seconds.
fn partitioned(name: &str, class: &str, doc: &str, parts: u32, sleep: &str) -> TempDir {
    let dir = TempDir::new(name);
    std::fs::write(
        dir.0.join(format!("{}.py", class.to_lowercase())),
        format!(
            r#""""{doc}"""
import time

import ayeaye


class {class}(ayeaye.PartitionedModel):
    def build(self):
        self.log("{class} finished")

    def partition_slice(self, workers_count):
        return [("work", {{"n": n}}) for n in range({parts})]

    def work(self, n):
        time.sleep({sleep})
        return {{"n": n}}

    def partition_subtask_complete(self, task_message):
        pass
"#
        ),
    )
    .unwrap();
    dir
}

fn models() -> TempDir {
    partitioned(
        "autoscale-models",
        "BurstEtl",
        "Forty subtasks of a second each: a burst for the autoscaler.",
        40,
        "1",
    )
}

/// Autoscaling's bounds as the API gives them (`null`: off).
async fn bounds(agent: &LocalAgent) -> Value {
    api(agent, "GET", "/api/v1/autoscale", None).await.1["autoscale"].clone()
}

/// A local agent on `models` autoscaling between 0 and `max` workers.
fn autoscaled(models: &TempDir, max: u32, idle_window: u32) -> LocalAgent {
    LocalAgent::start(
        0,
        &[
            "--models",
            &models.0.display().to_string(),
            "--min-workers",
            "0",
            "--max-workers",
            &max.to_string(),
            "--idle-window",
            &idle_window.to_string(),
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_at_zero_grows_for_a_burst_and_returns_to_zero() {
    let models = models();
    let agent = autoscaled(&models, 4, 10);
    assert!(workers(&agent).await.is_empty(), "it starts with no worker");

    // A submission to a fleet at zero is queued, and starts a worker.
    let t0 = Instant::now();
    let (status, v) = api(
        &agent,
        "POST",
        "/api/v1/tasks",
        Some(&json!({"model_class": "BurstEtl"})),
    )
    .await;
    assert_eq!(status, 202, "queued while no worker runs: {v}");
    let queue_id = v["queued"]["id"].as_i64().unwrap();
    let mut first_subtask = None;
    let mut most = 0usize;
    let mut counts = Vec::new();
    let parent = eventually(
        "the burst finishing",
        Duration::from_secs(240),
        async || {
            let ws = workers(&agent).await;
            most = most.max(ws.len());
            counts.push(ws.len());
            if first_subtask.is_none()
                && ws.iter().any(|w| {
                    w["node"]["running_tasks"].as_array().is_some_and(|r| {
                        r.iter()
                            .any(|t| t["task_id"].as_str().unwrap_or("").contains("::"))
                    })
                })
            {
                first_subtask = Some(t0.elapsed());
            }
            let (_, q) = api(&agent, "GET", &format!("/api/v1/queue/{queue_id}"), None).await;
            if q["state"] == "left" {
                let id = q["detail"]["task_id"].as_str().unwrap().to_owned();
                let (_, d) = api(&agent, "GET", &format!("/api/v1/tasks/{id}"), None).await;
                let done = d["groups"][0]["subtasks"].as_array().map_or(0, |s| {
                    s.iter().filter(|s| s["status"] == "complete").count()
                });
                if d["task"]["status"] == "complete" && done == 40 {
                    return Ok(id);
                }
                assert_ne!(d["task"]["status"], "failed", "{d}");
            }
            Err(format!("workers {counts:?}\n{}", agent.log()))
        },
    )
    .await;
    let burst = t0.elapsed();
    assert_eq!(most, 4, "the fleet grew to the maximum: {counts:?}");
    // While the burst ran, no worker was taken away.
    let peak_at = counts.iter().position(|c| *c == 4).unwrap();
    assert!(
        counts[..peak_at].windows(2).all(|w| w[1] >= w[0]),
        "the fleet only grew during the burst: {counts:?}"
    );
    let (_, lost) = api(&agent, "GET", "/api/v1/tasks?status=lost", None).await;
    assert!(
        lost["tasks"].as_array().unwrap().is_empty(),
        "no task lost: {lost}"
    );

    // Idle for the window: back to zero.
    let idle_from = Instant::now();
    eventually(
        "the fleet back at zero",
        Duration::from_secs(60),
        async || {
            let none = workers(&agent).await.is_empty();
            holds(none, || agent.log())
        },
    )
    .await;
    let back_to_zero = idle_from.elapsed();
    let (_, ev) = api(&agent, "GET", "/api/v1/events", None).await;
    let reasons: Vec<String> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"] == "autoscale")
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("queued in the gateway") && r.contains("0 → 1")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("waiting in the broker") && r.ends_with("→ 4")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("idle for 10 s") && r.ends_with("→ 0")),
        "{reasons:?}"
    );
    eprintln!(
        "FIGURE autoscale (local, 0..4): submission -> first subtask running {:?}; burst of 40 done in {burst:?}; back to 0 after {back_to_zero:?} (window 10 s); task {parent}",
        first_subtask.unwrap_or_default()
    );
    eprintln!("FIGURE autoscale decisions: {reasons:?}");
}

/// A worker killed with -9 in the middle of a subtask. Fossa 0.0.37 took
/// the subtask off RabbitMQ when it started, so nobody would run it again
/// and the parent would wait for ever. Once the killed worker answers again
/// without it, the gateway puts it back on the queue as the parent sent it
/// (same body, correlation id and reply queue): it runs once more, the
/// parent completes, every subtask's output is written exactly once and the
/// parent counts each subtask's completion exactly once. The history keeps
/// the lost run with what was done about it.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_subtask_has_the_subtask_put_back_and_the_parent_completes() {
    let out = TempDir::new("killed-output");
    let models = TempDir::new("killed-models");
    std::fs::write(
        models.0.join("slowetl.py"),
        format!(
            r#""""Six subtasks of 6 s each, each writing its output once it is done."""
import os
import time

import ayeaye

OUT = {out:?}


class SlowEtl(ayeaye.PartitionedModel):
    def build(self):
        self.log("SlowEtl finished")

    def partition_slice(self, workers_count):
        return [("work", {{"n": n}}) for n in range(6)]

    def work(self, n):
        time.sleep(6)
        with open(os.path.join(OUT, "outputs"), "a") as f:
            f.write(f"{{n}}\n")
        return {{"n": n}}

    def partition_subtask_complete(self, task_message):
        value = getattr(task_message, "return_value", None) or {{}}
        with open(os.path.join(OUT, "completions"), "a") as f:
            f.write(f"{{value.get('n')}}\n")
"#,
            out = out.0.display().to_string()
        ),
    )
    .unwrap();
    let dir = models.0.display().to_string();
    let agent = LocalAgent::start(2, &["--models", &dir]);
    let v = submit(&agent, &json!({"model_class": "SlowEtl"})).await;
    let parent = v["task_id"].as_str().unwrap().to_owned();
    // The worker that does not run the parent, once it runs a subtask.
    let parent_worker = v["worker_id"].as_str().unwrap().to_owned();
    let what = "a subtask running on the other worker";
    let (victim, subtask) = eventually(what, Duration::from_secs(60), async || {
        let ws = workers(&agent).await;
        // Every one of the 6 subtasks seen by the gateway, running or done:
        // none is left in the broker for the victim to start unseen between
        // the last poll and the kill (a subtask started and lost between two
        // polls is the gap the gateway does not cover yet).
        let seen: std::collections::HashSet<&str> = ws
            .iter()
            .flat_map(|w| {
                ["running_tasks", "recent_completed_tasks"]
                    .into_iter()
                    .filter_map(|k| w["node"][k].as_array())
                    .flatten()
            })
            .filter_map(|t| t["task_id"].as_str())
            .filter(|i| i.contains("::"))
            .collect();
        if seen.len() < 6 {
            return Err(format!("{} subtasks seen: {ws:?}", seen.len()));
        }
        let hit = ws.iter().find_map(|w| {
            let id = w["id"].as_str()?;
            if id == parent_worker {
                return None;
            }
            let t = w["node"]["running_tasks"]
                .as_array()?
                .iter()
                .find(|t| t["task_id"].as_str().is_some_and(|i| i.contains("::")))?;
            Some((w.clone(), t["task_id"].as_str()?.to_owned()))
        });
        hit.ok_or_else(|| format!("{ws:?}"))
    })
    .await;
    let port = port_of(&victim);
    let pid = listening_pid(port).expect("the victim listens");
    kill_group_of(pid);
    let killed = Instant::now();
    let what = "the lost subtask put back on the queue";
    eventually(what, Duration::from_secs(60), async || {
        let (_, ev) = api(&agent, "GET", "/api/v1/events", None).await;
        let put_back = ev["events"].as_array().unwrap().iter().any(|e| {
            e["source"] == "rescue"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(&subtask) && m.contains("put back on the queue"))
        });
        holds(put_back, || format!("{ev}\n{}", agent.log()))
    })
    .await;
    eprintln!(
        "FIGURE worker killed mid-subtask -> its subtask back on the queue: {:?}",
        killed.elapsed()
    );
    let detail = eventually(
        "the parent complete",
        Duration::from_secs(120),
        async || {
            let (_, d) = api(&agent, "GET", &format!("/api/v1/tasks/{parent}"), None).await;
            if d["task"]["status"] == "complete" {
                return Ok(d);
            }
            Err(format!("{d}\n{}", agent.log()))
        },
    )
    .await;
    assert!(detail["stuck"].is_null(), "{detail}");
    eprintln!(
        "FIGURE worker killed mid-subtask -> parent complete {:?} after the kill",
        killed.elapsed()
    );
    let lines = |f: &str| {
        let mut v: Vec<u32> = std::fs::read_to_string(out.0.join(f))
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        lines("outputs"),
        (0..6).collect::<Vec<_>>(),
        "each output exactly once"
    );
    assert_eq!(
        lines("completions"),
        (0..6).collect::<Vec<_>>(),
        "each completion counted once"
    );
    // The lost run stays in the history, saying it was put back.
    let (_, lost) = api(&agent, "GET", "/api/v1/tasks?status=lost", None).await;
    let row = lost["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_id"] == subtask.as_str())
        .unwrap_or_else(|| panic!("{subtask} is in the history as lost: {lost}"))
        .clone();
    assert!(
        row["results"]["payload"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("put back on the queue (run 2 of 3)")),
        "{row}"
    );
}

/// The parent's own node killed mid-run: its reply queue went with it, so
/// the gateway submits the task again (once by default), as a second
/// attempt linked to the first, and that attempt completes.
#[tokio::test(flavor = "multi_thread")]
async fn a_parent_lost_with_its_node_is_submitted_again_and_completes() {
    let models = partitioned(
        "parent-lost-models",
        "ParentEtl",
        "Six subtasks of 2 s each.",
        6,
        "2",
    );
    let dir = models.0.display().to_string();
    let agent = LocalAgent::start(2, &["--models", &dir]);
    let v = submit(
        &agent,
        &json!({"model_class": "ParentEtl", "method_kwargs": {}}),
    )
    .await;
    let first = v["task_id"].as_str().unwrap().to_owned();
    let parent_worker = v["worker_id"].as_str().unwrap().to_owned();
    // Mid-run: some subtask runs somewhere.
    eventually("a subtask running", Duration::from_secs(60), async || {
        let running = workers(&agent).await.iter().any(|w| {
            w["node"]["running_tasks"].as_array().is_some_and(|ts| {
                ts.iter()
                    .any(|t| t["task_id"].as_str().is_some_and(|i| i.contains("::")))
            })
        });
        holds(running, || agent.log())
    })
    .await;
    let ws = workers(&agent).await;
    let address = ws
        .iter()
        .find(|w| w["id"] == parent_worker.as_str())
        .and_then(|w| w["address"].as_str())
        .unwrap()
        .to_owned();
    let port: u16 = address.rsplit(':').next().unwrap().parse().unwrap();
    kill_group_of(listening_pid(port).expect("the parent's node listens"));
    let killed = Instant::now();
    let what = "the parent submitted again and its second attempt complete";
    let second = eventually(what, Duration::from_secs(120), async || {
        let (_, d) = api(&agent, "GET", &format!("/api/v1/tasks/{first}"), None).await;
        let attempts = d["attempts"].as_array().cloned().unwrap_or_default();
        let Some(second) = attempts.iter().find(|a| a["attempt"] == 2) else {
            return Err(format!("{d}\n{}", agent.log()));
        };
        let id = second["task_id"].as_str().unwrap().to_owned();
        let (_, d2) = api(&agent, "GET", &format!("/api/v1/tasks/{id}"), None).await;
        if d2["task"]["status"] == "complete" {
            return Ok((id, d, d2));
        }
        Err(format!("{d2}"))
    })
    .await;
    eprintln!(
        "FIGURE parent's node killed -> the second attempt complete: {:?}",
        killed.elapsed()
    );
    let (second, d1, d2) = second;
    assert_eq!(d1["task"]["status"], "lost", "{d1}");
    let reason = d1["task"]["results"]["payload"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("submitted again as queued task #")
            && reason.contains("(attempt 2 of 2)")
            && reason.contains(&format!("it ran again as task {second} (attempt 2)")),
        "{reason}"
    );
    assert_eq!(d1["attempts"], d2["attempts"], "both pages list both");
    let (_, html) = fossa_tests::local::page(&agent, &format!("/tasks/{second}")).await;
    assert!(
        html.contains(&format!("href=\"/tasks/{first}\">attempt 1</a>")),
        "the second attempt's page links the first"
    );
}

/// Scale-in while work runs: after a burst, one subtask runs on for 25 s.
/// The autoscaler takes away the idle workers after the window (3 → the
/// busy ones), stopping idle workers first and never a busy one; a manual
/// scale to 0 then leaves the busy workers running until their work is
/// done. Nothing is lost and the parent completes.
#[tokio::test(flavor = "multi_thread")]
async fn scale_in_during_running_work_stops_only_idle_workers() {
    let models = partitioned(
        "scale-in-models",
        "TailEtl",
        "Nine subtasks of a second, then one of 25 s.",
        10,
        "25 if n == 9 else 1",
    );
    let agent = autoscaled(&models, 3, 4);
    let (status, v) = api(
        &agent,
        "POST",
        "/api/v1/tasks",
        Some(&json!({"model_class": "TailEtl"})),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    let queue_id = v["queued"]["id"].as_i64().unwrap();
    let t0 = Instant::now();
    let (mut parent, mut most, mut partial, mut manual) = (None, 0usize, None, false);
    // A busy worker stopped would lose its subtask (Fossa does not run it
    // again): the parent would never complete, and the history would list
    // it as lost.
    let what = "the parent complete and the fleet at zero";
    eventually(what, Duration::from_secs(150), async || {
        let ws = workers(&agent).await;
        most = most.max(ws.len());
        let busy = ws.iter().any(|w| {
            w["node"]["running_tasks"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        });
        let (_, ev) = api(&agent, "GET", "/api/v1/events", None).await;
        let autoscale: Vec<String> = ev["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["source"] == "autoscale")
            .map(|e| e["message"].as_str().unwrap().to_owned())
            .collect();
        if partial.is_none() {
            partial = autoscale
                .iter()
                .find(|m| m.contains("workers busy, nothing waiting)"))
                .cloned();
        }
        if partial.is_some() && !manual && busy {
            // Scale to 0 by hand while the long subtask still runs.
            let (s, v) = api(
                &agent,
                "POST",
                "/api/v1/scale",
                Some(&json!({"workers": 0})),
            )
            .await;
            assert_eq!(s, 200, "{v}");
            manual = true;
        }
        let (_, q) = api(&agent, "GET", &format!("/api/v1/queue/{queue_id}"), None).await;
        if let Some(id) = q["detail"]["task_id"].as_str() {
            let (_, d) = api(&agent, "GET", &format!("/api/v1/tasks/{id}"), None).await;
            let done = d["groups"][0]["subtasks"].as_array().map_or(0, |s| {
                s.iter().filter(|s| s["status"] == "complete").count()
            });
            if d["task"]["status"] == "complete" && done == 10 {
                parent = Some(id.to_owned());
            }
        }
        holds(parent.is_some() && ws.is_empty(), || {
            let log = agent.log();
            format!(
                "parent {parent:?}, partial {partial:?}, manual {manual}, workers {ws:?}\n{log}"
            )
        })
    })
    .await;
    assert_eq!(most, 3, "the fleet grew to its maximum");
    assert!(manual, "the manual scale to 0 came while work ran");
    let (_, lost) = api(&agent, "GET", "/api/v1/tasks?status=lost", None).await;
    assert!(
        lost["tasks"].as_array().unwrap().is_empty(),
        "no task lost: {lost}"
    );
    let (_, ev) = api(&agent, "GET", "/api/v1/events", None).await;
    let messages: Vec<String> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("run work and stop once idle")),
        "the busy workers were kept at 0 wanted: {messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.ends_with("(idle)")),
        "{messages:?}"
    );
    eprintln!(
        "FIGURE scale-in during running work (local, 0..3): {}; then 0 by hand; complete, nothing lost, {:?}",
        partial.unwrap_or_default(),
        t0.elapsed()
    );
}

/// Autoscaling set through the API: bad bounds are refused with the
/// reason and change nothing; good ones apply at once, survive a restart of
/// the agent with the same flags, and yield to new flags.
#[tokio::test(flavor = "multi_thread")]
async fn autoscale_set_in_the_api_is_checked_kept_and_yields_to_new_flags() {
    let models = models();
    let mut agent = autoscaled(&models, 2, 30);
    let configured = json!({"min_workers": 0, "max_workers": 2, "idle_window_secs": 30});
    assert_eq!(bounds(&agent).await, configured);
    for (body, says) in [
        (
            json!({"min_workers": 3, "max_workers": 2}),
            "--min-workers 3 is above --max-workers 2",
        ),
        (
            json!({"min_workers": 0, "max_workers": 100}),
            "above the 64 workers this mode runs",
        ),
        (
            json!({"min_workers": 0, "max_workers": 0}),
            "--max-workers 0",
        ),
        (
            json!({"min_workers": 0, "max_workers": 2, "idle_window_secs": 0}),
            "--idle-window 0",
        ),
        (
            json!({"min_workers": 0, "max_workers": 2, "bogus": 1}),
            "unknown field `bogus`",
        ),
        (
            json!({"min_workers": -1, "max_workers": 2}),
            "invalid value",
        ),
    ] {
        let (status, v) = api(&agent, "POST", "/api/v1/autoscale", Some(&body)).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert!(v.to_string().contains(says), "{body}: {v}");
        assert_eq!(bounds(&agent).await, configured, "{body} changed nothing");
    }
    let set = json!({"min_workers": 1, "max_workers": 3, "idle_window_secs": 20});
    let (status, v) = api(&agent, "POST", "/api/v1/autoscale", Some(&set)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(bounds(&agent).await, set);
    // The new minimum starts a worker.
    eventually(
        "a worker for the new minimum",
        Duration::from_secs(60),
        async || {
            let some = !workers(&agent).await.is_empty();
            holds(some, || agent.log())
        },
    )
    .await;
    // A restart with the same flags keeps what the API set.
    agent.interrupt();
    let flags = |max: &str| {
        vec![
            "--models".to_owned(),
            models.0.display().to_string(),
            "--min-workers".into(),
            "0".into(),
            "--max-workers".into(),
            max.into(),
            "--idle-window".into(),
            "30".into(),
        ]
    };
    let same = flags("2");
    agent.spawn(0, &same.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    agent.wait_output("all 0 workers ready", Duration::from_secs(120));
    assert_eq!(bounds(&agent).await, set, "kept across the restart");
    let (_, ev) = api(&agent, "GET", "/api/v1/events", None).await;
    assert!(
        ev.to_string()
            .contains("autoscaling between 1 and 3 workers (idle window 20 s), as set in the UI"),
        "{ev}"
    );
    // New flags win over what the API set.
    agent.interrupt();
    let new = flags("4");
    agent.spawn(0, &new.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    agent.wait_output("all 0 workers ready", Duration::from_secs(120));
    assert_eq!(
        bounds(&agent).await,
        json!({"min_workers": 0, "max_workers": 4, "idle_window_secs": 30})
    );
    // Off: the count stays where it is.
    let (status, v) = api(&agent, "DELETE", "/api/v1/autoscale", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(bounds(&agent).await, Value::Null);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("autoscaling off, as set in the UI"),
        "{v}"
    );
}

/// What the gateway sends a parent for a subtask lost 3 times is a
/// `TaskFailed` that Fossa's own code reads as one (ayeaye's
/// `task_message_factory` in the test venv), naming the lost subtask.
#[test]
fn a_subtask_failed_by_the_gateway_is_a_task_failed_to_fossa() {
    let t = fossa_web::model::FossaTask {
        task_id: "abcde:3::amq.gen-XYZ".into(),
        model_class: "SlowEtl".into(),
        method: Some("work".into()),
        method_kwargs: json!({"n": 3}),
        status: fossa_web::model::TaskStatus::Running,
        started: Some(1),
        finished: None,
        results: None,
        spec: json!({"resolver_context": {}, "model_construction_kwargs": null}),
    };
    let body = fossa_agent::fleet::rescue::failed(&t);
    let script = "import sys\nfrom ayeaye.runtime.task_message import task_message_factory, TaskFailed\nm = task_message_factory(sys.stdin.read())\nassert isinstance(m, TaskFailed), type(m)\nprint(m.exception_class_name, m.task_id, m.method_kwargs['n'], m.traceback[0])\n";
    let mut child = std::process::Command::new(fossa_tests::venv_bin("python"))
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&body).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.starts_with("WorkerLost abcde:3::amq.gen-XYZ 3 ")
            && said.contains("lost with its worker 3 times"),
        "{said}"
    );
}

/// Every local worker's log, for a failure's message.
fn worker_logs(agent: &LocalAgent) -> String {
    let dir = agent.state.0.join("state/logs");
    let mut all = String::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        all.push_str(&format!("== {}\n{text}\n", e.path().display()));
    }
    all
}

/// How [`subtask_lost_unseen`] loses subtask 1.
#[derive(Clone, Copy, PartialEq)]
enum Loss {
    /// Its worker killed between two looks.
    Unseen,
    /// As `Unseen`, and its note lost too.
    UnseenNoNote,
    /// Its node's governor killed; the node itself answers on.
    Governor,
}

/// Three workers of one slot; a partitioned parent of three subtasks, two
/// in flight. The gateway looks away (the agent is stopped) while a worker
/// takes subtask 1 from the queue and is killed with -9 mid-run, after
/// subtask 2 ran: no look ever saw subtask 1. With `lose_notes`, subtask 1
/// also empties the nodes' notes queue (as if its note were lost too).
/// With [`Loss::Governor`], subtask 1 instead kills its own node's
/// governor with -9 (the process that runs tasks and sends their replies)
/// and the agent keeps looking. The agent, running again, the parent's id
/// and when it went on.
async fn subtask_lost_unseen(loss: Loss) -> (LocalAgent, String, Instant, [TempDir; 2]) {
    let models = TempDir::new("unseen-models");
    let out = TempDir::new("unseen-out");
    std::fs::write(
        models.0.join("unseenetl.py"),
        r#""""Three subtasks, two in flight; the first run of subtask 1 hangs."""
import os
import pathlib
import time

import ayeaye

OUT = pathlib.Path(os.environ["UNSEEN_OUT"])


class UnseenEtl(ayeaye.PartitionedModel):
    def build(self):
        pass

    def partition_plea(self):
        return ayeaye.PartitionedModel.PartitionOption(minimum=1, maximum=2, optimal=2)

    def partition_slice(self, workers_count):
        return [("work", {"n": n}) for n in range(3)]

    def work(self, n):
        first = OUT / "hung-1"
        if n == 1 and not first.exists():
            if os.environ.get("UNSEEN_LOSE_NOTES"):
                import pika

                c = pika.BlockingConnection(pika.URLParameters(os.environ["RABBITMQ_URL"]))
                c.channel().queue_purge("fossa_gateway_taken")
                c.close()
            first.write_text(str(os.getpgid(0)))
            if os.environ.get("UNSEEN_KILL_GOVERNOR"):
                import signal

                (OUT / "orphan-1").write_text(str(os.getpid()))
                os.kill(os.getppid(), signal.SIGKILL)
            time.sleep(3600)
        time.sleep(1)
        (OUT / f"done-{n}").write_text("")
        return {"n": n}

    def partition_subtask_complete(self, task_message):
        pass
"#,
    )
    .unwrap();
    let mut agent = LocalAgent::prepared();
    let dir = models.0.display().to_string();
    let out_dir = out.0.display().to_string();
    let mut env = vec![
        ("FOSSA_CPU_TASK_RATIO", "0.01"),
        ("UNSEEN_OUT", out_dir.as_str()),
    ];
    match loss {
        Loss::Unseen => {}
        Loss::UnseenNoNote => env.push(("UNSEEN_LOSE_NOTES", "1")),
        Loss::Governor => env.push(("UNSEEN_KILL_GOVERNOR", "1")),
    }
    // One task slot a worker (ceil(CPUs × 0.01)): the parent fills its own
    // worker, so its subtasks run on the other two.
    agent.spawn(
        0,
        &[
            "--models",
            &dir,
            "--min-workers",
            "3",
            "--max-workers",
            "3",
            "--idle-window",
            "5",
        ],
        &env,
    );
    agent.wait_output("all 3 workers ready", Duration::from_secs(180));
    let v = submit(&agent, &json!({"model_class": "UnseenEtl"})).await;
    let first = v["task_id"].as_str().unwrap().to_owned();
    if loss == Loss::Governor {
        let orphan = out.0.join("orphan-1");
        let t = Instant::now();
        while !orphan.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "subtask 1 never ran\n{}\n{}",
                agent.log(),
                worker_logs(&agent)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        return (agent, first, Instant::now(), [models, out]);
    }
    // The gateway looks away from now until the hung subtask's worker is
    // gone: SIGSTOP freezes the agent (its workers and broker run on).
    agent.signal("STOP");
    let hung = out.0.join("hung-1");
    let t = Instant::now();
    while !(hung.exists() && out.0.join("done-2").exists()) {
        if t.elapsed() > Duration::from_secs(60) {
            agent.signal("CONT");
            panic!(
                "subtask 1 never hung or subtask 2 never ran: {:?}\n{}",
                std::fs::read_dir(&out.0).unwrap().collect::<Vec<_>>(),
                agent.log()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let pgid: i32 = std::fs::read_to_string(&hung)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the hung subtask's worker");
    agent.signal("CONT");
    (agent, first, Instant::now(), [models, out])
}

/// Waits for task `first` complete; its page's JSON.
async fn complete_on_first_attempt(agent: &LocalAgent, first: &str) -> serde_json::Value {
    let what = "the parent complete on its first attempt";
    eventually(what, Duration::from_secs(90), async || {
        let (_, d) = api(agent, "GET", &format!("/api/v1/tasks/{first}"), None).await;
        holds(d["task"]["status"] == "complete", || {
            format!("{d}\n{}", agent.log())
        })?;
        Ok::<_, String>(d)
    })
    .await
}

/// The events whose message says any of `words`, oldest first.
async fn events_saying(agent: &LocalAgent, words: &[&str]) -> Vec<String> {
    let (_, ev) = api(agent, "GET", "/api/v1/events", None).await;
    ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| words.iter().any(|w| m.contains(w)))
        .map(str::to_owned)
        .collect()
}

/// A subtask taken and lost before any look saw it is found by its node's
/// note, and put back (#25 item 1): the parent completes on its first
/// attempt, each subtask once, subtask 1 on its second run.
#[tokio::test(flavor = "multi_thread")]
async fn a_subtask_lost_before_any_look_is_found_by_its_note_and_put_back() {
    let (agent, first, released, [_models, out]) = subtask_lost_unseen(Loss::Unseen).await;
    let d = complete_on_first_attempt(&agent, &first).await;
    eprintln!(
        "FIGURE a subtask lost unseen, found by its note: parent complete {:?} after the gateway looked again",
        released.elapsed()
    );
    let put_back = events_saying(&agent, &["put back on the queue"]).await;
    assert_eq!(put_back.len(), 1, "{put_back:?}");
    assert!(
        put_back[0].contains(":1::") && put_back[0].contains("run 2 of 3"),
        "{put_back:?}"
    );
    for n in 0..3 {
        assert!(out.0.join(format!("done-{n}")).exists(), "subtask {n} done");
    }
    assert!(d["stuck"].is_null(), "{d}");
    let again = d["attempts"]
        .as_array()
        .is_some_and(|a| a.iter().any(|a| a["attempt"] == 2));
    assert!(!again, "not submitted again: {d}");
}

/// A node whose governor ended is replaced, and its work put back (#25):
/// Fossa's governor runs the tasks and sends their replies, and a node
/// whose governor ended (a reply sent as the broker went, before the node
/// module guarded it; or an out-of-memory kill) still answered node_info
/// and took subtasks that then waited there for ever. The node now ends
/// with its governor, its task processes with it; local mode starts it
/// again, the gateway puts subtask 1 back, and the parent completes on
/// its first attempt.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_whose_governor_ended_is_replaced_and_its_subtask_put_back() {
    let (agent, first, killed, [_models, out]) = subtask_lost_unseen(Loss::Governor).await;
    let d = complete_on_first_attempt(&agent, &first).await;
    eprintln!(
        "FIGURE a node's governor killed -9: parent complete {:?} after",
        killed.elapsed()
    );
    let said = events_saying(&agent, &["put back on the queue", "starting it again"]).await;
    assert!(
        said.iter()
            .any(|m| m.contains(":1::") && m.contains("run 2 of 3")),
        "{said:?}"
    );
    assert!(
        said.iter().any(|m| m.contains("starting it again")),
        "{said:?}"
    );
    for n in 0..3 {
        assert!(out.0.join(format!("done-{n}")).exists(), "subtask {n} done");
    }
    // The hung task process went with its node.
    let orphan: i32 = std::fs::read_to_string(out.0.join("orphan-1"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(orphan), None).is_err(),
        "the ended governor's task process {orphan} still runs"
    );
    assert!(d["stuck"].is_null(), "{d}");
}

/// A parent that can never finish pins no worker (#25): as above, but the
/// subtask's note is lost too, so nothing can put it back and the parent
/// waits for its reply forever. The gateway finds it stuck (a later
/// subtask of its group was seen, that one never), releases its worker
/// from scale-in protection, and the autoscaler takes the idle fleet to
/// zero. The parent is lost with its worker, submitted again by the
/// gateway, and the second attempt completes.
#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_parent_pins_no_worker_and_the_fleet_still_goes_to_zero() {
    let (agent, first, released, _dirs) = subtask_lost_unseen(Loss::UnseenNoNote).await;

    // Found stuck, said on its page and as an event, and its worker let go.
    let what = "the parent found stuck and its worker released";
    let said = eventually(what, Duration::from_secs(90), async || {
        let (_, d) = api(&agent, "GET", &format!("/api/v1/tasks/{first}"), None).await;
        let (_, ev) = api(&agent, "GET", "/api/v1/events", None).await;
        let event = ev["events"].as_array().unwrap().iter().find_map(|e| {
            let m = e["message"].as_str()?;
            (m.contains(&first) && m.contains("can never finish")).then(|| m.to_owned())
        });
        match (d["stuck"].as_str(), event) {
            (Some(stuck), Some(event)) => Ok((stuck.to_owned(), event)),
            _ => Err(format!("{d}\n{}", agent.log())),
        }
    })
    .await;
    eprintln!(
        "FIGURE a stuck parent's worker released {:?} after the gateway looked again",
        released.elapsed()
    );
    assert!(
        said.0.contains("subtask 1 was never seen running"),
        "{}",
        said.0
    );
    assert!(
        said.1.contains("no longer kept from scale-in"),
        "{}",
        said.1
    );

    // The autoscaler may now take the idle fleet to zero: the stuck parent
    // goes with its worker and is submitted again; that attempt completes.
    let set = json!({"min_workers": 0, "max_workers": 3, "idle_window_secs": 5});
    let (status, v) = api(&agent, "POST", "/api/v1/autoscale", Some(&set)).await;
    assert_eq!(status, 200, "{v}");
    let (mut zero, mut second) = (None, None);
    let what = "the fleet at zero, then the second attempt complete";
    eventually(what, Duration::from_secs(180), async || {
        let (_, ev) = api(&agent, "GET", "/api/v1/events", None).await;
        zero = zero.take().or_else(|| {
            ev["events"].as_array().unwrap().iter().find_map(|e| {
                let m = e["message"].as_str()?;
                (e["source"] == "autoscale" && m.contains("→ 0")).then(|| m.to_owned())
            })
        });
        let (_, d) = api(&agent, "GET", &format!("/api/v1/tasks/{first}"), None).await;
        let attempt = d["attempts"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["attempt"] == 2))
            .and_then(|a| a["task_id"].as_str())
            .map(str::to_owned);
        if let Some(id) = attempt {
            let (_, d2) = api(&agent, "GET", &format!("/api/v1/tasks/{id}"), None).await;
            if d2["task"]["status"] == "complete" {
                second = Some((d, d2));
            }
        }
        holds(zero.is_some() && second.is_some(), || {
            format!("zero {zero:?}\n{ev}\n{}", agent.log())
        })
    })
    .await;
    let (d1, d2) = second.unwrap();
    assert_eq!(d1["task"]["status"], "lost", "{d1}");
    assert_eq!(
        d2["groups"][0]["subtasks"].as_array().map(Vec::len),
        Some(3),
        "{d2}"
    );
    eprintln!("the fleet went to zero: {}", zero.unwrap());
}
