//! What the agent touches on its own host: commands ([`exec`]), process
//! groups ([`procs`]), a real AMQP login to a broker ([`amqp`]), the Docker
//! engine ([`docker`]), the instances that booted on the data volume ([`boots`]), the UI's TLS material ([`tls`]) and the agent's own binaries ([`upgrade`]). Duties reach
//! the host only through these.

pub mod amqp;
pub mod boots;
pub mod disk;
pub mod docker;
pub mod exec;
pub mod journal;
pub mod pins;
pub mod procs;
pub mod tls;
pub mod upgrade;
