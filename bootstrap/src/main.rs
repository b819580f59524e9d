//! `fossa-bootstrap`: launch, inspect and destroy a fossa-gateway stack.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = fossa_bootstrap::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FOSSA_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match fossa_bootstrap::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let e = anyhow::Error::from(e);
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
