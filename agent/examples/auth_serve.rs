//! The web UI as the agent serves it (TLS, the agent's own certificate code,
//! argon2 with the agent's memory release), over a fleet of 3 simulated
//! workers, for `bench/auth.sh` to measure a burst of wrong passwords and
//! basic-auth latency against. Prints `listening PORT` and serves until killed.
//! Usage: auth_serve STATE_DIR PASSWORD

use std::sync::Arc;
use std::time::Duration;

use fossa_agent::events::Events;
use fossa_agent::fleet::{FleetModel, PollSettings};
use fossa_agent::testkit::simnode::{start, Behaviour, StaticBackend};

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
    let mut addrs = Vec::new();
    for i in 0..3 {
        addrs.push(
            start(
                &format!("127.0.0.{}", 100 + i),
                Behaviour::Ok(Duration::from_millis(5)),
            )
            .await
            .expect("bind a loopback address"),
        );
    }
    let fleet = FleetModel::new(
        Arc::new(StaticBackend::new(&addrs)),
        fossa_agent::duties::driver::fixed_board(Vec::new()),
        Events::default(),
        "bench",
        PollSettings::default(),
        fossa_agent::testkit::scratch_history(),
    );
    fleet.refresh().await;
    let tls = state.join("tls");
    let cert =
        fossa_agent::host::tls::load_or_create(&tls, &["127.0.0.1".into()]).expect("certificate");
    let cookie_key = fossa_agent::host::tls::cookie_key(&tls).expect("cookie key");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = fossa_web::WebConfig {
        listen: format!("127.0.0.1:{port}").parse().expect("address"),
        password,
        cookie_key,
        tls: Some((cert.cert_pem, cert.key_pem)),
        session_state_file: Some(tls.join("session-state")),
        after_hashing: Some(fossa_agent::memory::release),
        password_updates: None,
    };
    println!("listening {port}");
    let _ = fossa_web::build(config, fleet).launch().await;
}
