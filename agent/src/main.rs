//! `fossa-agent`: the gateway agent (`run`), its one-shot duties (`nat`,
//! `build`) and local mode (`local`).

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = fossa_agent::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rocket=warn,rocket_http=error,hyper=warn".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fossa_agent::run(cli)) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            // Once, the whole chain (stderr is the journal under systemd).
            eprintln!("error: {:#}", anyhow::Error::from(e));
            std::process::ExitCode::FAILURE
        }
    }
}
