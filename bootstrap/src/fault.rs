//! Fault injection for the reliability suite: `FOSSA_FAULT_EXIT_AFTER_STEP=N`
//! makes the process die abruptly (exit 137, like a kill) right after its N-th
//! step, so tests can prove that re-running `launch` finishes the job.

/// The environment variable.
pub const EXIT_AFTER_STEP: &str = "FOSSA_FAULT_EXIT_AFTER_STEP";

/// Called after each finished step.
pub fn after_step(step: usize) {
    if let Ok(v) = std::env::var(EXIT_AFTER_STEP) {
        if v.parse::<usize>().ok() == Some(step) {
            eprintln!("fault injection: exiting after step {step}");
            std::process::exit(137);
        }
    }
}
