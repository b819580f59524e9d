//! The task history at scale, for `bench/history.sh` and `bench/footprint.sh`.
//!
//! `history_bench fill DIR N`: writes N tasks (parents with 8 subtasks each,
//! results of ~200 bytes) into `DIR/history.sqlite3` through the recorder,
//! as the fleet poller does, and prints how long that took.
//!
//! `history_bench serve DIR N PASSWORD`: fills as above, then checks that
//! recording never holds up the fleet poller (refreshes of 3 simulated
//! workers while batches of 1,000 rows are recorded), keeps 10,000 log
//! lines for worker `sim-1`, and serves the web UI over that history
//! (TLS, as the agent does). Prints `listening PORT` and serves until killed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fossa_agent::events::Events;
use fossa_agent::fleet::logs::LocalLogs;
use fossa_agent::fleet::{FleetModel, PollSettings};
use fossa_agent::history::{History, Observed};
use fossa_agent::testkit::simnode::StaticBackend;
use fossa_contract::config::HistoryLimits;
use fossa_web::model::FossaTask;
use serde_json::json;

fn rows(from: u64, n: u64, now: i64) -> Vec<Observed> {
    (from..from + n)
        .map(|i| {
            let parent = i / 9;
            let (task_id, class) = if i % 9 == 0 {
                (format!("p{parent:07}"), "QuickPartitionedEtl")
            } else {
                (format!("pool{parent:07}:{}::amq.gen-{parent:07}", i % 9 - 1), "QuickPartitionedEtl")
            };
            let started = now - 86_400 + (i as i64) / 4;
            Observed {
                task: FossaTask {
                    task_id,
                    model_class: if parent % 5 == 0 { "SpreadEtl".into() } else { class.into() },
                    method: Some(if i % 9 == 0 { "go" } else { "work" }.into()),
                    method_kwargs: json!({"n": i % 9}),
                    status: if i % 97 == 0 { "failed" } else { "complete" }.into(),
                    started: Some(started),
                    finished: Some(started + 2),
                    results: Some(json!({"type": "TaskComplete", "payload": {"n": i, "digest": "5feceb66ffc86f38d952786c6d696c79c2dbc239dd4e91b46729d73a27fb57e9", "took": 1.002}})),
                    spec: Default::default(),
                },
                worker_id: format!("sim-{}", i % 3 + 1),
            }
        })
        .collect()
}

/// Writes `n` tasks through the recorder; returns once they are all in.
async fn fill(h: &Arc<History>, n: u64) -> Duration {
    let t = Instant::now();
    let now = fossa_contract::unix_now();
    let mut sent = 0;
    while sent < n {
        let k = 1000.min(n - sent);
        while !h.record(rows(sent, k, now)) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sent += k;
    }
    loop {
        let p = h.page(Default::default()).await.expect("page");
        if p.total >= n {
            return t.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// This process's resident memory, from /proc.
fn rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .map(|l| {
            l.split_whitespace()
                .nth(1)
                .unwrap_or("0")
                .parse::<f64>()
                .unwrap_or(0.0)
                / 1024.0
        })
        .map(|mb| format!("{mb:.1} MB"))
        .unwrap_or_default()
}

#[rocket::main]
async fn main() {
    fossa_agent::memory::tune();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || -> ! {
        eprintln!("usage: history_bench fill DIR N | history_bench serve DIR N PASSWORD");
        std::process::exit(2)
    };
    let (cmd, dir, n) = match args.as_slice() {
        [c, d, n, ..] => (
            c.as_str(),
            std::path::PathBuf::from(d),
            n.parse::<u64>().unwrap_or_else(|_| usage()),
        ),
        _ => usage(),
    };
    let limits = HistoryLimits {
        max_tasks: (n as u32).max(HistoryLimits::default().max_tasks),
        ..Default::default()
    };
    let history = History::open(&dir, limits).expect("open the history");
    let took = fill(&history, n).await;
    println!("history_fill_{n}_tasks: {:.1} s", took.as_secs_f64());
    // What a start costs /metrics: one pass to seed the counters.
    let t = std::time::Instant::now();
    let tally = history.tally().expect("count the history");
    println!(
        "history_tally_at_start_{n}_tasks: {:.0} ms ({} completed)",
        t.elapsed().as_secs_f64() * 1000.0,
        tally.get(
            fossa_web::tally::Kind::Task,
            fossa_web::tally::Outcome::Completed
        ) + tally.get(
            fossa_web::tally::Kind::Subtask,
            fossa_web::tally::Outcome::Completed
        )
    );
    fossa_agent::memory::release();
    println!("rss_after_fill: {}", rss());
    if cmd == "fill" {
        return;
    }
    let password = args.get(3).cloned().unwrap_or_else(|| usage());
    let addrs = fossa_agent::testkit::three_quick_workers().await;
    let logs = LocalLogs::new(dir.join("logs"), Vec::new());
    std::fs::create_dir_all(dir.join("logs")).expect("logs dir");
    for i in 0..10_000 {
        logs.push("sim-1", &format!("[2026-11-26 06:00:00 +0000] [42] [INFO] subtask {i} finished: {{'n': {i}, 'digest': '5feceb66ffc8', 'took': 1.0}}"));
    }
    let mut backend = StaticBackend::new(&addrs);
    backend.logs = Some(logs);
    let settings = PollSettings::default();
    let fleet = FleetModel::new(
        Arc::new(backend),
        fossa_agent::duties::driver::fixed_board(Vec::new()),
        Events::default(),
        "bench",
        settings,
        history.clone(),
    );
    // Refreshes while the recorder is flooded: they must not wait on it.
    let flood = {
        let h = history.clone();
        tokio::spawn(async move {
            let now = fossa_contract::unix_now();
            let mut i = n;
            loop {
                if h.record(rows(i, 1000, now)) {
                    i += 1000;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let mut ms = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        fleet.refresh().await;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    flood.abort();
    ms.sort_by(f64::total_cmp);
    println!(
        "refresh_while_recording_ms: p50 {:.1}, max {:.1} (bound: timeout {} ms + 100 ms)",
        ms[ms.len() / 2],
        ms[ms.len() - 1],
        settings.timeout.as_millis()
    );
    println!(
        "recorder_batches_skipped_while_flooded: {}",
        history.dropped()
    );
    let (config, port) = fossa_agent::testkit::bench_web_config(&dir, password);
    // The fleet's loops on a driver of their own, as the agent runs them.
    let mut driver = fossa_agent::duties::driver::Driver::new(
        Events::default(),
        fossa_agent::duties::driver::Backoff::default(),
    );
    fossa_agent::fleet::loops::register(&mut driver, &fleet, Box::new(|_: &()| None));
    let (_ctx, ctx_rx) = tokio::sync::watch::channel(Arc::new(()));
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let loops = driver.start(ctx_rx, stop_rx);
    println!("listening {port}");
    let _ = fossa_web::build(config, fleet).launch().await;
    for l in loops {
        l.abort();
    }
}
