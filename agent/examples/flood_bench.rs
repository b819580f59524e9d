//! A worker that floods the gateway: nodes whose node_info lists about
//! 260,000 running tasks (as many as fit in the 4 MiB body bound), and nodes
//! whose one subtask carries nearly 4 MiB of method_kwargs, among ordinary
//! ones. Prints the fleet refresh time, the latency of the pages that show
//! tasks, and the process's memory; run through `bench/flood.sh`.

use std::time::{Duration, Instant};

use fossa_agent::fleet::PollSettings;
use fossa_agent::testkit::simnode::{flood_body, start, Behaviour};
use rocket::local::asynchronous::Client;

mod common;
use common::{login, percentile};

/// The process's resident memory now and at its peak, in MiB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

#[rocket::main]
async fn main() {
    let (rss0, _) = memory();
    let flood = std::env::var("FLOOD_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4usize);
    let mut addrs = Vec::new();
    for i in 0..flood {
        addrs.push(
            start(&format!("127.0.3.{}", i + 1), Behaviour::Flood)
                .await
                .unwrap(),
        );
        addrs.push(
            start(&format!("127.0.4.{}", i + 1), Behaviour::HeavyKwargs)
                .await
                .unwrap(),
        );
    }
    for i in 0..8 {
        addrs.push(
            start(
                &format!("127.0.5.{}", i + 1),
                Behaviour::Ok(Duration::from_millis(20)),
            )
            .await
            .unwrap(),
        );
    }
    println!(
        "flood_workers: {flood} listing {} tasks each, {flood} with ~4 MiB kwargs, 8 ordinary",
        flood_body().1
    );
    let (fleet, _scratch) = fossa_agent::testkit::static_fleet(
        &addrs,
        PollSettings {
            timeout: Duration::from_secs(10),
            ..Default::default()
        },
    );
    let refresh = common::timed_refreshes(&fleet, 5).await;
    println!("flood_refresh_median: {:.0} ms (of 5)", refresh[2]);
    println!("flood_refresh_max: {:.0} ms", refresh[4]);
    let config = common::web_config(None);
    let client = Client::untracked(fossa_web::build(config, fleet.clone()))
        .await
        .expect("rocket");
    let session = login(&client).await;
    let mut worst = 0f64;
    for (name, path) in [
        ("overview", "/"),
        ("api_overview", "/api/v1/overview"),
        ("workers_api", "/api/v1/workers"),
        ("flooding_worker_page", "/workers/sim-1"),
        ("heavy_worker_page", "/workers/sim-2"),
        ("tasks_page", "/tasks"),
        ("tasks_api", "/api/v1/tasks"),
        ("flooded_task_page", "/tasks/5"),
        ("heavy_subtask_page", "/tasks/p:1::r"),
        ("metrics", "/metrics"),
    ] {
        let mut lat = Vec::new();
        let mut bytes = 0;
        for i in 0..200 {
            if i % 50 == 0 {
                // Pages follow new snapshots: refresh between rounds.
                fleet.refresh().await;
            }
            let t = Instant::now();
            let r = client
                .get(path)
                .private_cookie(session.clone())
                .dispatch()
                .await;
            assert_eq!(r.status(), rocket::http::Status::Ok, "{path}");
            bytes = r.into_bytes().await.map_or(0, |b| b.len());
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let p99 = percentile(&lat, 0.99);
        worst = worst.max(p99);
        println!(
            "flood_{name}_p50: {:.2} ms, p99: {p99:.2} ms, max: {:.2} ms ({} KiB)",
            percentile(&lat, 0.5),
            lat[lat.len() - 1],
            bytes / 1024
        );
    }
    println!("flood_worst_page_p99: {worst:.2} ms (goal < 100 ms)");
    let (rss, peak) = memory();
    println!(
        "flood_memory: {rss:.0} MiB resident after, {peak:.0} MiB peak, {rss0:.0} MiB at start"
    );
}
