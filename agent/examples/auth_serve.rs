//! The web UI as the agent serves it (TLS, the agent's own certificate code,
//! argon2 with the agent's memory release), over a fleet of 3 simulated
//! workers, for `bench/auth.sh` to measure a burst of wrong passwords and
//! basic-auth latency against. Prints `listening PORT` and serves until killed.
//! Usage: auth_serve STATE_DIR PASSWORD

use fossa_agent::fleet::PollSettings;

#[rocket::main]
async fn main() {
    fossa_agent::memory::tune();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (state, password) = match args.as_slice() {
        [s, p] => (std::path::PathBuf::from(s), p.clone()),
        _ => {
            eprintln!("usage: auth_serve STATE_DIR PASSWORD");
            std::process::exit(2);
        }
    };
    let addrs = fossa_agent::testkit::three_quick_workers().await;
    let (fleet, _scratch) = fossa_agent::testkit::static_fleet(&addrs, PollSettings::default());
    fleet.refresh().await;
    let (config, port) = fossa_agent::testkit::bench_web_config(&state, password);
    println!("listening {port}");
    let _ = fossa_web::build(config, fleet).launch().await;
}
