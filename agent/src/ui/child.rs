//! `fossa-agent ui-serve`: the UI process. It confines itself first, while
//! it has one thread ([`super::confine`]); then it reads its settings from
//! the core over descriptor 3 and serves the UI with a
//! [`RemoteFleet`]. It ends when the core hangs up.

use std::os::fd::FromRawFd;
use std::process::ExitCode;
use std::sync::Arc;

use fossa_web::auth::SessionStore;
use fossa_web::privsep::client::{RemoteFleet, Unanswered};
use fossa_web::privsep::wire::{self, Hello, WireError};

use super::confine::{confine, Account};
use super::process::{SESSION_FD, SOCKET_FD};

/// `ui-serve` arguments, chosen by the core (nothing secret).
#[derive(Debug, Clone, clap::Args)]
pub struct UiServeArgs {
    /// Become this user (the core runs as root).
    #[arg(long, requires = "gid")]
    pub uid: Option<u32>,
    /// ... and this group.
    #[arg(long, requires = "uid")]
    pub gid: Option<u32>,
    /// Keep CAP_NET_BIND_SERVICE, to listen on a port below 1024.
    #[arg(long)]
    pub bind_low: bool,
    /// Confine as the UI process does, then try what it must not be able
    /// to do and print what happened, one line each (for tests and audits).
    #[arg(long)]
    pub probe: bool,
}

/// Why the UI process stopped.
#[derive(Debug, thiserror::Error)]
enum ChildError {
    #[error(transparent)]
    Confine(#[from] super::confine::ConfineError),
    #[error("cannot use descriptor {SOCKET_FD} (run by the agent only)")]
    Socket(#[source] std::io::Error),
    #[error("cannot read the settings from the agent")]
    Hello(#[source] WireError),
    #[error("the agent sent no settings")]
    NoHello,
    #[error(transparent)]
    Connect(#[from] Unanswered),
    #[error("{0}")]
    Web(String),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

/// Runs the UI process (before any runtime exists: it must confine itself
/// with one thread).
pub fn main(args: &UiServeArgs) -> ExitCode {
    let account = args
        .uid
        .zip(args.gid)
        .map(|(uid, gid)| Account { uid, gid });
    let run = || -> Result<(), ChildError> {
        confine(account, args.bind_low)?;
        if args.probe {
            super::probe::report();
            return Ok(());
        }
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(ChildError::Runtime)?
            .block_on(serve())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let p = if crate::host::journal::stderr_is_journal() {
                "<3>"
            } else {
                ""
            };
            eprintln!(
                "{p}error: the web UI process: {}",
                fossa_contract::aws::chain(&e)
            );
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> Result<(), ChildError> {
    let sock: std::os::unix::net::UnixStream = inherited(SOCKET_FD);
    sock.set_nonblocking(true).map_err(ChildError::Socket)?;
    let sock = tokio::net::UnixStream::from_std(sock).map_err(ChildError::Socket)?;
    let (mut reader, writer) = sock.into_split();
    let hello: Hello = wire::read(&mut reader, wire::ANSWER_MAX_BYTES)
        .await
        .map_err(ChildError::Hello)?
        .ok_or(ChildError::NoHello)?
        .body;
    let session_state_file = hello
        .session_file
        .then(|| SessionStore::Open(Arc::new(inherited::<std::fs::File>(SESSION_FD))));
    let (fleet, updates, gone) = RemoteFleet::connect(reader, writer).await?;
    let config = fossa_web::WebConfig {
        listen: hello.listen,
        password: hello.password,
        cookie_key: hello.cookie_key,
        tls: hello.tls,
        session_state_file,
        after_hashing: Some(crate::memory::release),
        password_updates: Some(updates.password),
        scrape_token: hello.scrape_token,
        scrape_token_updates: Some(updates.scrape_token),
    };
    let rocket = fossa_web::build(config, fleet)
        .ignite()
        .await
        .map_err(|e| ChildError::Web(fossa_web::explain(&e)))?;
    let shutdown = rocket.shutdown();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(ChildError::Socket)?;
    let launched = rocket.launch();
    tokio::pin!(launched);
    tokio::select! {
        r = &mut launched => {
            return r.map(|_| ()).map_err(|e| ChildError::Web(fossa_web::explain(&e)));
        }
        _ = gone => tracing::info!("the agent's core hung up; the web UI process stops"),
        _ = term.recv() => {}
    }
    shutdown.notify();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), launched).await;
    Ok(())
}

/// The descriptor `fd` the core handed this process, owned from now on.
#[allow(unsafe_code)]
fn inherited<T: FromRawFd>(fd: std::os::fd::RawFd) -> T {
    // SAFETY: the core puts the socket on SOCKET_FD and the session-state
    // file on SESSION_FD before exec; nothing else in this process owns
    // them, and each is taken once.
    unsafe { T::from_raw_fd(fd) }
}
