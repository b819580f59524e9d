//! No lost work, at scale (#25): a partitioned model whose subtasks each
//! write their own output, on local workers, run once undisturbed and once
//! with a quarter of the workers (at least one) killed with -9 mid-subtask
//! at spread-out moments. Every parent completes with nobody acting, every
//! output exists exactly once, and the parent counts each subtask once.
//!
//! The suite runs a small case (24 subtasks of 4 s on 4 workers); the
//! issue's case is `FOSSA_LOST_WORK="200 8"` (subtasks, workers), which
//! `bench/lost_work.sh` runs and prints the figures of.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fossa_tests::local::{
    api, broker_port, group_leader_of, kill_group_of, listening_pid, port_of, submit, workers,
    LocalAgent,
};
use fossa_tests::{eventually, TempDir};
use serde_json::{json, Value};

/// Seconds each subtask works.
const WORK_SECS: f64 = 4.0;

/// A models directory with `SpreadEtl`: `parts` subtasks, each writing
/// `out/<n>` once done (a second write of the same `n` goes to `dups`),
/// and the parent appending each completion it counts to `completions`.
fn models(out: &TempDir, parts: u32) -> TempDir {
    let dir = TempDir::new("lost-work-models");
    std::fs::write(
        dir.0.join("spreadetl.py"),
        format!(
            r#""""{parts} subtasks of {WORK_SECS} s, each writing its own output."""
import os
import time

import ayeaye

OUT = {out:?}


class SpreadEtl(ayeaye.PartitionedModel):
    def build(self):
        self.log("SpreadEtl finished")

    def partition_plea(self):
        # Up to every slot of the fleet at once (ayeaye's default is 16).
        return ayeaye.PartitionedModel.PartitionOption(minimum=1, maximum=128, optimal=128)

    def partition_slice(self, workers_count):
        return [("work", {{"n": n}}) for n in range({parts})]

    def work(self, n):
        time.sleep({WORK_SECS})
        try:
            fd = os.open(os.path.join(OUT, f"out-{{n}}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.close(fd)
        except FileExistsError:
            with open(os.path.join(OUT, "dups"), "a") as f:
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
    dir
}

/// How many subtask outputs `out` holds.
fn outputs(out: &TempDir) -> usize {
    std::fs::read_dir(&out.0)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("out-"))
        })
        .count()
}

/// What one run came to.
struct Run {
    makespan: Duration,
    killed: usize,
    outputs: usize,
    duplicated: usize,
    completions: BTreeMap<u32, u32>,
    /// When an output was written twice: which, the events and the logs.
    diagnosis: String,
}

/// Submits `SpreadEtl` and waits for its parent to complete; with `kills`,
/// kills that many workers with -9 (never the parent's), each while one of
/// its subtasks is 1 to 3 s into its 4 s of work, spread over the first
/// half of the run.
async fn run(agent: &LocalAgent, out: &TempDir, parts: u32, kills: usize) -> Run {
    let t = Instant::now();
    let v = submit(agent, &json!({"model_class": "SpreadEtl"})).await;
    let parent = v["task_id"].as_str().unwrap().to_owned();
    let parent_worker = v["worker_id"].as_str().unwrap().to_owned();
    // The run's length undisturbed, from the fleet's slots (each worker's
    // depends on this machine's CPUs).
    let slots: u64 = workers(agent)
        .await
        .iter()
        .filter_map(|w| w["node"]["max_concurrent_tasks"].as_u64())
        .sum();
    let expected = f64::from(parts) * WORK_SECS / slots.max(1) as f64;
    let mut killed = Vec::new();
    while killed.len() < kills {
        // Spread the kills over the first half of the run: the next after
        // its share.
        let due = Duration::from_secs_f64(expected * 0.5 * killed.len() as f64 / kills as f64);
        if t.elapsed() < due {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let now = fossa_contract::unix_now();
        let victim = workers(agent).await.into_iter().find(|w| {
            let id = w["id"].as_str().unwrap_or_default();
            id != parent_worker
                && !killed.contains(&id.to_owned())
                // Every slot busy: it cannot take a new subtask from the
                // queue between this look and the kill (one started and
                // lost unseen is a gap the gateway does not cover yet).
                && w["node"]["available_processing_capacity"] == 0
                && w["node"]["running_tasks"].as_array().is_some_and(|ts| {
                    // Every subtask it runs is 1 to 3 s into its 4 s (its
                    // start is in whole seconds, and a loaded machine's
                    // polls can skip a second): none can have finished
                    // unseen by the time it is killed (a run that finished
                    // in the second before a kill would run again:
                    // OPERATING says so).
                    let subtasks: Vec<&Value> = ts
                        .iter()
                        .filter(|t| t["task_id"].as_str().is_some_and(|i| i.contains("::")))
                        .collect();
                    !subtasks.is_empty()
                        && ts.len() == subtasks.len()
                        && subtasks.iter().all(|t| {
                            (1..=2).contains(&(now - t["started"].as_i64().unwrap_or(now)))
                        })
                })
        });
        let Some(w) = victim else {
            assert!(
                t.elapsed() < Duration::from_secs(300),
                "no busy worker to kill"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let port = port_of(&w);
        if let Some(pid) = listening_pid(port) {
            kill_group_of(pid);
            killed.push(w["id"].as_str().unwrap().to_owned());
        }
    }
    let within = Duration::from_secs(60 + u64::from(parts) * 3);
    eventually("the parent complete", within, async || {
        let (_, d) = api(agent, "GET", &format!("/api/v1/tasks/{parent}"), None).await;
        match d["task"]["status"].as_str() {
            Some("complete") => Ok(()),
            _ => Err(format!("{}\n{}", d["task"], agent.log())),
        }
    })
    .await;
    let makespan = t.elapsed();
    let mut completions = BTreeMap::new();
    for l in std::fs::read_to_string(out.0.join("completions"))
        .unwrap_or_default()
        .lines()
    {
        *completions.entry(l.trim().parse().unwrap()).or_insert(0) += 1;
    }
    let outputs = outputs(out);
    let duplicated = std::fs::read_to_string(out.0.join("dups"))
        .unwrap_or_default()
        .lines()
        .count();
    let mut diagnosis = String::new();
    if duplicated > 0 {
        let (_, ev) = api(agent, "GET", "/api/v1/events", None).await;
        diagnosis = format!(
            "dups: {}\nkilled: {killed:?}\nevents: {ev}\nagent log:\n{}",
            std::fs::read_to_string(out.0.join("dups")).unwrap_or_default(),
            agent.log()
        );
        for e in std::fs::read_dir(agent.state.0.join("logs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().filter(|l| l.contains("ubtask")).collect();
            diagnosis.push_str(&format!(
                "\n--- {} ---\n{}",
                e.path().display(),
                lines.join("\n")
            ));
        }
    }
    Run {
        diagnosis,
        makespan,
        killed: killed.len(),
        outputs,
        duplicated,
        completions,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quarter_of_the_workers_killed_mid_subtask_loses_nothing() {
    let (parts, n_workers): (u32, u32) = std::env::var("FOSSA_LOST_WORK")
        .ok()
        .and_then(|v| {
            let (p, w) = v.split_once(' ')?;
            Some((p.parse().ok()?, w.parse().ok()?))
        })
        .unwrap_or((24, 4));
    let kills = (n_workers as usize).div_ceil(4).max(1);
    let calm_out = TempDir::new("lost-work-calm");
    let rough_out = TempDir::new("lost-work-rough");
    let mut figures = Vec::new();
    for (out, kills) in [(&calm_out, 0), (&rough_out, kills)] {
        let m = models(out, parts);
        let dir = m.0.display().to_string();
        let agent = LocalAgent::start(n_workers, &["--models", &dir]);
        let r = run(&agent, out, parts, kills).await;
        assert_eq!(r.killed, kills);
        assert_eq!(r.outputs, parts as usize, "every output exists");
        assert_eq!(r.duplicated, 0, "no output written twice\n{}", r.diagnosis);
        assert_eq!(r.completions.len(), parts as usize, "{:?}", r.completions);
        assert!(
            r.completions.values().all(|n| *n == 1),
            "each completion counted once: {:?}",
            r.completions
        );
        if kills > 0 {
            let (_, ev) = api(&agent, "GET", "/api/v1/events", None).await;
            let put_back = ev["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| {
                    e["source"] == "rescue"
                        && e["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("put back on the queue"))
                })
                .count();
            assert!(put_back >= kills, "{ev}");
            figures.push(format!("subtasks put back: {put_back}"));
        }
        figures.push(format!(
            "{} subtasks on {n_workers} workers, {kills} killed: makespan {:.1} s",
            parts,
            r.makespan.as_secs_f64()
        ));
    }
    for f in figures {
        eprintln!("FIGURE {f}");
    }
    eprintln!("FIGURE subtasks lost 0, duplicated 0, parents complete 2 of 2");
}

/// The broker killed with -9 mid-run (#25): the parent's reply queue goes
/// with it (exclusive), so its run can never finish; the agent restarts the
/// broker, and the parent, cut off, is submitted again and completes, every
/// output written.
#[tokio::test(flavor = "multi_thread")]
async fn the_broker_killed_mid_run_loses_no_task() {
    let parts = 12;
    let out = TempDir::new("broker-loss");
    let m = models(&out, parts);
    let dir = m.0.display().to_string();
    let agent = LocalAgent::start(3, &["--models", &dir]);
    let v = submit(&agent, &json!({"model_class": "SpreadEtl"})).await;
    let parent = v["task_id"].as_str().unwrap().to_owned();
    eventually("subtasks running", Duration::from_secs(60), async || {
        let ws = workers(&agent).await;
        let running = ws
            .iter()
            .flat_map(|w| {
                w["node"]["running_tasks"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter(|t| t["task_id"].as_str().is_some_and(|i| i.contains("::")))
            .count();
        if running >= 2 {
            Ok(())
        } else {
            Err(format!("{running} subtasks running"))
        }
    })
    .await;
    let (_, o) = api(&agent, "GET", "/api/v1/overview", None).await;
    let port = broker_port(&o);
    let beam = listening_pid(port).expect("RabbitMQ listens");
    let killed = Instant::now();
    std::process::Command::new("kill")
        .args(["-9", &beam.to_string()])
        .status()
        .unwrap();
    // The parent ends: cut off, then its next attempt completes.
    let done = eventually(
        "the parent's last attempt complete",
        Duration::from_secs(240),
        async || {
            let (_, d) = api(&agent, "GET", &format!("/api/v1/tasks/{parent}"), None).await;
            let last = fossa_tests::last_attempt(&d, &parent);
            let (_, l) = api(&agent, "GET", &format!("/api/v1/tasks/{last}"), None).await;
            match l["task"]["status"].as_str() {
                Some("complete") if last != parent => Ok(l["task"].clone()),
                _ => Err(format!(
                    "parent: {}\nattempts: {}\nlast: {}\n{}",
                    d["task"],
                    d["attempts"],
                    l["task"],
                    agent.log()
                )),
            }
        },
    )
    .await;
    let took = killed.elapsed();
    let outputs = outputs(&out);
    assert_eq!(outputs, parts as usize, "every output exists: {done}");
    let (_, ev) = api(&agent, "GET", "/api/v1/events", None).await;
    assert!(
        ev.to_string().contains("cut off from the broker"),
        "the event says why: {ev}"
    );
    eprintln!(
        "FIGURE broker killed mid-run: the parent's next attempt complete {:.1} s later",
        took.as_secs_f64()
    );
}

/// A worker told to stop mid-subtask drains (#25): SIGTERM to its node, as
/// Fargate's stop window starts (a Spot interruption's two minutes,
/// scale-in, a deployment; the task definition sets `FOSSA_DRAIN_SECS`,
/// here given to the local workers). It takes no new subtask, finishes
/// those it runs, and exits: nothing is put back, nothing runs twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_told_to_stop_finishes_its_subtasks_and_takes_no_more() {
    let parts = 16;
    let out = TempDir::new("drain");
    let m = models(&out, parts);
    let dir = m.0.display().to_string();
    let agent = LocalAgent::start_with(3, &["--models", &dir], &[("FOSSA_DRAIN_SECS", "60")]);
    let v = submit(&agent, &json!({"model_class": "SpreadEtl"})).await;
    let parent = v["task_id"].as_str().unwrap().to_owned();
    let parent_worker = v["worker_id"].as_str().unwrap().to_owned();
    // A worker other than the parent's, each of its subtasks at most 2 s
    // into its 4 s: they finish within the window, after the SIGTERM.
    let (victim, port, ran) = eventually("a busy worker", Duration::from_secs(60), async || {
        let now = fossa_contract::unix_now();
        for w in workers(&agent).await {
            let id = w["id"].as_str().unwrap_or_default().to_owned();
            let subtasks: Vec<String> = w["node"]["running_tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| (now - t["started"].as_i64().unwrap_or(0)) <= 2)
                .filter_map(|t| t["task_id"].as_str().filter(|i| i.contains("::")))
                .map(str::to_owned)
                .collect();
            if id != parent_worker && !subtasks.is_empty() {
                return Ok((id, port_of(&w), subtasks));
            }
        }
        Err("no busy worker yet".to_owned())
    })
    .await;
    // The node: gunicorn's master (its web workers listen on the port too).
    let pid = group_leader_of(listening_pid(port).expect("the node listens"));
    let told = fossa_contract::unix_now();
    let t = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    eventually("the node gone", Duration::from_secs(60), async || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie until the agent reaps it.
        match stat.rsplit(')').next().map(str::trim_start) {
            Some(rest) if !rest.is_empty() && !rest.starts_with('Z') => {
                Err(format!("{pid} still runs"))
            }
            _ => Ok(()),
        }
    })
    .await;
    let drained = t.elapsed();
    let gone = fossa_contract::unix_now();
    eventually(
        "the parent complete",
        Duration::from_secs(120),
        async || {
            let (_, d) = api(&agent, "GET", &format!("/api/v1/tasks/{parent}"), None).await;
            match d["task"]["status"].as_str() {
                Some("complete") => Ok(()),
                _ => Err(format!("{}\n{}", d["task"], agent.log())),
            }
        },
    )
    .await;
    assert_eq!(outputs(&out), parts as usize, "every output exists");
    let dups = std::fs::read_to_string(out.0.join("dups")).unwrap_or_default();
    assert!(dups.is_empty(), "no subtask ran twice: {dups}");
    let completions = std::fs::read_to_string(out.0.join("completions")).unwrap_or_default();
    assert_eq!(completions.lines().count(), parts as usize, "{completions}");
    let (_, ev) = api(&agent, "GET", "/api/v1/events", None).await;
    assert!(
        !ev.to_string().contains("put back on the queue"),
        "nothing was lost: {ev}"
    );
    // The subtasks it ran when told to stop completed there, and it took
    // none after (one taken in the second of the signal may start there;
    // the pool's restart of the slot, under the same id, takes new ones).
    let (_, d) = api(&agent, "GET", &format!("/api/v1/tasks/{parent}"), None).await;
    let subs = d["groups"][0]["subtasks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for id in &ran {
        let row = subs.iter().find(|s| s["task_id"] == id.as_str());
        let row = row.unwrap_or_else(|| panic!("{id} in {d:#}"));
        assert_eq!(row["worker_id"], victim.as_str(), "{row:#}");
        assert_eq!(row["status"], "complete", "{row:#}");
    }
    let later: Vec<&Value> = subs
        .iter()
        .filter(|s| {
            let started = s["started"].as_i64().unwrap_or(0);
            s["worker_id"] == victim.as_str() && told + 1 < started && started < gone
        })
        .collect();

    let path = format!("/api/v1/workers/{victim}/logs?limit=10000");
    let (_, l) = api(&agent, "GET", &path, None).await;
    let logs: String = l["lines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        later.is_empty(),
        "no subtask taken after the SIGTERM at {told} (gone at {gone}): {later:#?}\n{logs}"
    );
    assert!(
        logs.contains("every task it ran finished"),
        "the node says it drained:\n{logs}"
    );
    eprintln!(
        "FIGURE a worker told to stop with {} subtask(s) running: drained and gone {:.1} s later, 0 put back, 0 run twice",
        ran.len(),
        drained.as_secs_f64()
    );
}
