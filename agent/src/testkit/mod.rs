//! Test fakes for the host, kept out of the shipped binary: only built with
//! the `testkit` feature, which the agent's own tests, examples and benches
//! switch on through a dev-dependency on this crate.

pub mod simnode;

/// A fresh directory under the system's temp dir, removed with everything
/// in it when dropped: a test run leaves nothing behind for the next one.
#[derive(Debug)]
pub struct ScratchDir(pub std::path::PathBuf);

impl ScratchDir {
    /// `<temp>/fossa-<what>-<pid>-<random>`, made empty.
    pub fn new(what: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(format!(
            "fossa-{what}-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).expect("a directory in the temp dir");
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A task history in a scratch directory; the directory goes with it.
pub struct ScratchHistory {
    /// The history, to hand to a fleet.
    pub history: std::sync::Arc<crate::history::History>,
    _dir: ScratchDir,
}

/// A task history in a fresh scratch directory.
pub fn scratch_history() -> ScratchHistory {
    let dir = ScratchDir::new("history");
    let history =
        crate::history::History::open(&dir.0, fossa_contract::config::HistoryLimits::default())
            .expect("a history in the temp dir");
    ScratchHistory { history, _dir: dir }
}

/// A fleet model over simulated nodes at `addrs` (a [`simnode::StaticBackend`])
/// with a scratch history, as the benchmarks poll them; keep the history
/// while the model is used.
pub fn static_fleet(
    addrs: &[std::net::SocketAddr],
    settings: crate::fleet::PollSettings,
) -> (std::sync::Arc<crate::fleet::FleetModel>, ScratchHistory) {
    let scratch = scratch_history();
    let fleet = crate::fleet::FleetModel::new(
        std::sync::Arc::new(simnode::StaticBackend::new(addrs)),
        crate::duties::driver::fixed_board(Vec::new()),
        crate::events::Events::default(),
        "bench",
        settings,
        scratch.history.clone(),
    );
    (fleet, scratch)
}

/// The web UI's configuration as the agent makes it (its own certificate
/// and cookie key in `state/tls`, argon2's memory release), on a free
/// loopback port, for the examples that serve the UI to a bench.
pub fn bench_web_config(state: &std::path::Path, password: String) -> (fossa_web::WebConfig, u16) {
    let tls = state.join("tls");
    let cert = crate::host::tls::load_or_create(&tls, &["127.0.0.1".into()]).expect("certificate");
    let cookie_key = crate::host::tls::cookie_key(&tls).expect("cookie key");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = fossa_web::WebConfig {
        listen: format!("127.0.0.1:{port}").parse().expect("address"),
        password,
        cookie_key,
        tls: Some((cert.cert_pem, cert.key_pem)),
        session_state_file: Some(tls.join("session-state").into()),
        after_hashing: Some(crate::memory::release),
        password_updates: None,
        scrape_token: None,
        scrape_token_updates: None,
    };
    (config, port)
}

/// Three simulated workers answering node_info in 5 ms, on 127.0.0.100-102:
/// the fleet the UI benches serve.
pub async fn three_quick_workers() -> Vec<std::net::SocketAddr> {
    let mut addrs = Vec::new();
    for i in 0..3 {
        addrs.push(
            simnode::start(
                &format!("127.0.0.{}", 100 + i),
                simnode::Behaviour::Ok(std::time::Duration::from_millis(5)),
            )
            .await
            .expect("bind a loopback address"),
        );
    }
    addrs
}
