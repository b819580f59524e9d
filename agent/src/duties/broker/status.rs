//! The broker's own account of itself, read with `rabbitmq-diagnostics
//! status` in its container: whether a memory or disk alarm is on (RabbitMQ
//! then blocks every publisher, so no subtask is sent and no parent
//! finishes), with the figures to act on. Parsing and the line are plain
//! data; only [`read`] touches Docker.

use std::time::Duration;

use bollard::Docker;
use fossa_contract::names::BROKER_CONTAINER;

use crate::host::docker::{exec_output, DockerError};

/// The command, in the container.
pub const COMMAND: [&str; 5] = [
    "rabbitmq-diagnostics",
    "-q",
    "--formatter",
    "json",
    "status",
];

/// A resource alarm RabbitMQ raised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alarm {
    /// Memory use above the high watermark.
    Memory,
    /// Free disk below the limit.
    Disk,
    /// One this agent does not know, by RabbitMQ's name.
    Other(String),
}

/// What the broker says of its resources.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BrokerStatus {
    /// Alarms on.
    pub alarms: Vec<Alarm>,
    /// Memory in use, as RabbitMQ counts it (its calculation strategy).
    pub memory_used: u64,
    /// The memory high watermark.
    pub memory_limit: u64,
    /// Free disk where its data is.
    pub disk_free: u64,
    /// The free disk limit.
    pub disk_free_limit: u64,
}

/// The status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The command failed or did not end.
    #[error("cannot read the broker's status")]
    Docker(#[source] DockerError),
    /// Its output is not the JSON RabbitMQ prints.
    #[error("the broker's status is not the JSON rabbitmq-diagnostics prints")]
    Json(#[source] serde_json::Error),
}

#[derive(serde::Deserialize)]
struct Raw {
    #[serde(default)]
    alarms: Vec<RawAlarm>,
    #[serde(default)]
    memory: RawMemory,
    #[serde(default)]
    vm_memory_calculation_strategy: Option<String>,
    #[serde(default)]
    vm_memory_high_watermark_limit: u64,
    #[serde(default)]
    disk_free: u64,
    #[serde(default)]
    disk_free_limit: u64,
}

#[derive(serde::Deserialize)]
struct RawAlarm {
    #[serde(default)]
    resource: String,
}

#[derive(serde::Deserialize, Default)]
struct RawMemory {
    #[serde(default)]
    total: std::collections::HashMap<String, u64>,
}

/// Parses `rabbitmq-diagnostics -q --formatter json status`.
pub fn parse(json: &str) -> Result<BrokerStatus, StatusError> {
    let raw: Raw = serde_json::from_str(json).map_err(StatusError::Json)?;
    let strategy = raw
        .vm_memory_calculation_strategy
        .as_deref()
        .unwrap_or("rss");
    let memory_used = raw
        .memory
        .total
        .get(strategy)
        .or_else(|| raw.memory.total.values().max())
        .copied()
        .unwrap_or(0);
    let alarms = raw
        .alarms
        .into_iter()
        .map(|a| match a.resource.as_str() {
            "memory" => Alarm::Memory,
            "disk" => Alarm::Disk,
            other => Alarm::Other(other.to_owned()),
        })
        .collect();
    Ok(BrokerStatus {
        alarms,
        memory_used,
        memory_limit: raw.vm_memory_high_watermark_limit,
        disk_free: raw.disk_free,
        disk_free_limit: raw.disk_free_limit,
    })
}

/// Bytes in MiB with one decimal.
fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

impl BrokerStatus {
    /// Whether no alarm is on.
    pub fn well(&self) -> bool {
        self.alarms.is_empty()
    }

    /// The broker line's words: the alarms with their figures and what to
    /// do, or the figures alone.
    pub fn line(&self) -> String {
        let memory = format!(
            "memory {} of {}",
            mib(self.memory_used),
            mib(self.memory_limit)
        );
        let disk = format!(
            "disk {} free (limit {})",
            mib(self.disk_free),
            mib(self.disk_free_limit)
        );
        if self.well() {
            return format!("{memory}, {disk}");
        }
        let said: Vec<String> = self
            .alarms
            .iter()
            .map(|a| match a {
                Alarm::Memory => format!(
                    "memory alarm: {} in use, above its {} high watermark (let workers drain the queue, or give the gateway a larger instance type)",
                    mib(self.memory_used),
                    mib(self.memory_limit)
                ),
                Alarm::Disk => format!(
                    "disk alarm: {} free, below its {} limit (free space on the gateway's disk)",
                    mib(self.disk_free),
                    mib(self.disk_free_limit)
                ),
                Alarm::Other(r) => format!("{r} alarm"),
            })
            .collect();
        format!(
            "{}: RabbitMQ blocks every publisher, so no subtask is sent until it clears",
            said.join("; ")
        )
    }
}

/// Reads the broker container's status within `limit`.
pub async fn read(docker: &Docker, limit: Duration) -> Result<BrokerStatus, StatusError> {
    let out = exec_output(docker, BROKER_CONTAINER, &COMMAND, limit)
        .await
        .map_err(StatusError::Docker)?;
    parse(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RabbitMQ 3.10's output (trimmed), under a 10 MB watermark.
    const ALARMED: &str = r#"{"alarms":[{"node":"rabbit@gw","resource":"memory","type":"resource_limit"}],
        "memory":{"strategy":"rss","total":{"erlang":67371568,"rss":129286144,"allocated":45662208}},
        "vm_memory_calculation_strategy":"rss","vm_memory_high_watermark_limit":10000000,
        "disk_free":43474870272,"disk_free_limit":50000000,"product_version":"3.10.8"}"#;

    #[test]
    fn a_memory_alarm_is_said_with_its_figures() {
        let s = parse(ALARMED).unwrap();
        assert_eq!(s.alarms, [Alarm::Memory]);
        assert_eq!(s.memory_used, 129_286_144, "the rss strategy's figure");
        assert!(!s.well());
        let line = s.line();
        assert!(
            line.starts_with("memory alarm: 123.3 MiB in use, above its 9.5 MiB high watermark"),
            "{line}"
        );
        assert!(line.contains("blocks every publisher"), "{line}");
    }

    #[test]
    fn without_alarms_the_figures_alone() {
        let s = parse(&ALARMED.replace(
            r#"[{"node":"rabbit@gw","resource":"memory","type":"resource_limit"}]"#,
            "[]",
        ))
        .unwrap();
        assert!(s.well());
        assert_eq!(
            s.line(),
            "memory 123.3 MiB of 9.5 MiB, disk 41460.9 MiB free (limit 47.7 MiB)"
        );
        let disk =
            parse(&ALARMED.replace(r#""resource":"memory""#, r#""resource":"disk""#)).unwrap();
        assert!(disk
            .line()
            .starts_with("disk alarm: 41460.9 MiB free, below its 47.7 MiB limit"));
        assert!(parse("Error: unable to perform an operation").is_err());
    }
}
