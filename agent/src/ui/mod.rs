//! The web UI in its own unprivileged process (privilege separation, as
//! OpenSSH does it). The core — this process, which holds root, the Docker
//! socket, CAP_NET_ADMIN and the AWS credentials — starts the same binary as
//! `fossa-agent ui-serve`, hands it what it needs to serve over a socket
//! pair, and answers its typed requests (`fossa_web::privsep`). The UI
//! process confines itself ([`confine`]) before it reads anything.
//!
//! - [`UiProcess`] starts it, waits until it listens, and restarts it when it
//!   dies ([`UiDuty`], a duty like any other loop).
//! - [`child`] is the UI process's own side.

pub mod child;
pub mod confine;
mod probe;
mod process;

pub use process::{UiDuty, UiError, UiProcess, UiSpec, PERIOD};
