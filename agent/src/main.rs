//! `fossa-agent`: the gateway agent (`run`), its one-shot duties (`nat`,
//! `build`) and local mode (`local`).

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = fossa_agent::cli::Cli::parse();
    // Under systemd each line carries its priority for journald.
    let journal = fossa_agent::host::journal::stderr_is_journal();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rocket=warn,rocket_http=error,hyper=warn".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(fossa_agent::host::journal::Stderr { prefixed: journal })
        .init();
    // The UI process confines itself while it has one thread, before any runtime.
    if let fossa_agent::cli::Command::UiServe(args) = &cli.command {
        return fossa_agent::ui::child::main(args);
    }
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
            let p = if journal { "<3>" } else { "" };
            eprintln!("{p}error: {:#}", anyhow::Error::from(e));
            std::process::ExitCode::FAILURE
        }
    }
}
