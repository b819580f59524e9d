//! What the agent touches on its own host: commands ([`exec`]), process
//! groups ([`procs`]), the Docker engine ([`docker`]) and the UI's TLS
//! material ([`tls`]). Duties reach the host only through these.

pub mod docker;
pub mod exec;
pub mod procs;
pub mod tls;
