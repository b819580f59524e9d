//! Fleet benchmark: N simulated workers on loopback (100 ms answer, 5%
//! hanging), the time for the model to refresh them all, and the latency of
//! the overview page and API served from the model. Prints `name: value unit`
//! lines; run through `bench/run.sh`.

use std::time::{Duration, Instant};

use fossa_agent::fleet::PollSettings;
use fossa_agent::testkit::simnode::{start, Behaviour};
use rocket::local::asynchronous::Client;

mod common;
use common::{login, percentile};

/// The scraper's token of the bench's UI.
const SCRAPE_TOKEN: &str = "bench-scraper-token-0123456789";

#[rocket::main]
async fn main() {
    // Thousands of sockets: raise the open-file limit.
    let _ =
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 65_536, 65_536);
    let timeout = Duration::from_secs(1);
    let mut p99s = Vec::new();
    for n in [1usize, 100, 500, 2000] {
        let mut addrs = Vec::with_capacity(n);
        for i in 0..n {
            // Spread over 127.0.x.y so no single address runs out of ports.
            let ip = format!("127.0.{}.{}", 1 + i / 250, 1 + i % 250);
            let hang = n >= 20 && i % 20 == 0;
            let b = if hang {
                Behaviour::Hang
            } else {
                Behaviour::Ok(Duration::from_millis(100))
            };
            addrs.push(start(&ip, b).await.expect("bind a loopback address"));
        }
        let (fleet, _scratch) = fossa_agent::testkit::static_fleet(
            &addrs,
            PollSettings {
                timeout,
                ..Default::default()
            },
        );
        let refresh = common::timed_refreshes(&fleet, 3).await;
        let config = common::web_config(Some(SCRAPE_TOKEN));
        let client = Client::untracked(fossa_web::build(config, fleet.clone()))
            .await
            .expect("rocket");
        // Basic auth hashes the password on every request; measure with a session instead.
        let session = login(&client).await;
        // The first request after a refresh renders the summary of the new
        // snapshot (every page of it) once; later ones copy a finished page.
        let t = Instant::now();
        let r = client
            .get("/")
            .private_cookie(session.clone())
            .dispatch()
            .await;
        let _ = r.into_bytes().await;
        println!(
            "fleet_overview_first_after_refresh_n{n}: {:.2} ms",
            t.elapsed().as_secs_f64() * 1000.0
        );
        for (name, path) in [
            ("overview_page", "/"),
            ("api_workers", "/api/v1/workers"),
            ("metrics_scrape", "/metrics"),
        ] {
            let mut lat = Vec::new();
            for _ in 0..2000 {
                let t = Instant::now();
                // A scraper signs with its token, a browser with its session.
                let req = if path == "/metrics" {
                    client.get(path).header(rocket::http::Header::new(
                        "Authorization",
                        format!("Bearer {SCRAPE_TOKEN}"),
                    ))
                } else {
                    client.get(path).private_cookie(session.clone())
                };
                let r = req.dispatch().await;
                assert_eq!(r.status(), rocket::http::Status::Ok, "{path}");
                let _ = r.into_bytes().await;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let p99 = percentile(&lat, 0.99);
            println!("fleet_{name}_p50_n{n}: {:.2} ms", percentile(&lat, 0.5));
            println!("fleet_{name}_p99_n{n}: {p99:.2} ms");
            if name == "overview_page" {
                p99s.push(p99);
            }
        }
        println!(
            "fleet_refresh_n{n}: {:.0} ms (median of 3; node timeout {} ms, {} hanging)",
            refresh[1],
            timeout.as_millis(),
            if n >= 20 { n / 20 } else { 0 }
        );
    }
    println!(
        "fleet_overview_p99_ratio_n2000_over_n1: {:.2}",
        p99s[3] / p99s[0]
    );
}
