//! Autoscaling in local mode with real parts (Fossa nodes, RabbitMQ): a
//! fleet at zero queues a submission, starts a worker for it, grows to the
//! maximum as the partitioned model's 40 subtasks wait in the broker,
//! finishes everything, never stops a busy worker, and goes back to zero
//! after the idle window. Every decision is an event with its reason.

use std::time::{Duration, Instant};

use fossa_tests::local::{api, LocalAgent};
use fossa_tests::TempDir;
use serde_json::{json, Value};

fn models() -> TempDir {
    let dir = TempDir::new("autoscale-models");
    std::fs::write(
        dir.0.join("burst.py"),
        r#""""Forty subtasks of a second each: a burst for the autoscaler."""
import time

import ayeaye


class BurstEtl(ayeaye.PartitionedModel):
    def build(self):
        self.log("burst finished")

    def partition_slice(self, workers_count):
        return [("work", {"n": n}) for n in range(40)]

    def work(self, n):
        time.sleep(1)
        return {"n": n}

    def partition_subtask_complete(self, task_message):
        pass
"#,
    )
    .unwrap();
    dir
}

async fn workers(agent: &LocalAgent) -> Vec<Value> {
    let (_, ws) = api(agent, "GET", "/api/v1/workers", None).await;
    ws["workers"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_at_zero_grows_for_a_burst_and_returns_to_zero() {
    let models = models();
    let dir = models.0.display().to_string();
    let agent = LocalAgent::start(
        0,
        &[
            "--models",
            &dir,
            "--min-workers",
            "0",
            "--max-workers",
            "4",
            "--idle-window",
            "10",
        ],
    );
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
    let parent = loop {
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
                break id;
            }
            assert_ne!(d["task"]["status"], "failed", "{d}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(240),
            "the burst did not finish: workers {counts:?}\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
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
    while !workers(&agent).await.is_empty() {
        assert!(
            idle_from.elapsed() < Duration::from_secs(60),
            "the fleet did not return to zero\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
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
