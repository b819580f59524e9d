//! Fargate's documented rules for a task, checked before anything is made:
//! the task sizes (CPU units with their memories). Each rule names the AWS
//! page it comes from; the Fargate emulator enforces the same table.

/// Seconds Fargate waits after a task's SIGTERM before its SIGKILL: the
/// container definition's `stopTimeout`, at most 120 on Fargate (30 when
/// unset). A Spot interruption's two-minute warning is this SIGTERM. From
/// the ContainerDefinition API reference (`stopTimeout`:
/// <https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ContainerDefinition.html>)
/// and "AWS Fargate capacity providers"
/// (<https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-capacity-providers.html>).
/// The worker takes all of it.
pub const STOP_TIMEOUT_SECS: u32 = 120;

/// Fargate's `stopTimeout` when a container definition has none.
pub const DEFAULT_STOP_TIMEOUT_SECS: u32 = 30;

/// Seconds a worker told to stop waits for its running tasks
/// (`FOSSA_DRAIN_SECS`): [`STOP_TIMEOUT_SECS`] less the time gunicorn and
/// Fossa take to stop what is still running at the deadline, so that what
/// is left ends on its own terms rather than by SIGKILL.
pub const DRAIN_SECS: u32 = STOP_TIMEOUT_SECS - 15;

/// The task sizes Fargate runs (Linux): each CPU value with its smallest
/// memory, its largest and the step between them, in MiB (but 256 units,
/// which take 512, 1024 or 2048 only: [`SMALLEST_TASK_MEMORIES`]). From the
/// RegisterTaskDefinition API reference (`memory`:
/// <https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RegisterTaskDefinition.html>)
/// and "Troubleshoot Amazon ECS task definition invalid CPU or memory
/// errors" (<https://docs.aws.amazon.com/AmazonECS/latest/userguide/task-cpu-memory-error.html>);
/// 8 and 16 vCPU need platform version 1.4.0, which LATEST is.
pub const TASK_SIZES: [(u32, u32, u32, u32); 7] = [
    (256, 512, 2048, 0),
    (512, 1024, 4096, 1024),
    (1024, 2048, 8192, 1024),
    (2048, 4096, 16384, 1024),
    (4096, 8192, 30720, 1024),
    (8192, 16384, 61440, 4096),
    (16384, 32768, 122880, 8192),
];

/// The memories of the smallest task, 256 CPU units (0.25 vCPU).
pub const SMALLEST_TASK_MEMORIES: [u32; 3] = [512, 1024, 2048];

/// A CPU and memory pair Fargate does not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// No such CPU value.
    #[error(
        "Fargate has no task of {cpu} CPU units: use one of {}",
        TASK_SIZES.map(|s| s.0.to_string()).join(", ")
    )]
    Cpu {
        /// What was asked.
        cpu: u32,
    },
    /// The memory does not go with the CPU.
    #[error("Fargate does not run {cpu} CPU units with {memory} MiB (AWS refuses it: \"No Fargate configuration exists for given values\"): with --cpu {cpu} give --memory {}", memories(*cpu).iter().map(u32::to_string).collect::<Vec<_>>().join(", "))]
    Memory {
        /// The CPU units.
        cpu: u32,
        /// The memory asked for.
        memory: u32,
    },
}

/// Workers on Fargate Spot with an ARM64 worker image: Fargate Spot does not
/// run ARM64 tasks ("Linux tasks with the ARM64 architecture don't support
/// the Fargate Spot capacity provider",
/// <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-capacity-providers.html>).
/// The gateway builds the worker image for its own architecture, so a
/// Graviton gateway makes ARM64 workers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Fargate Spot does not run ARM64 tasks, and a Graviton gateway ({instance_type}) builds ARM64 worker images: leave out --spot (or give --no-spot), or choose an x86_64 instance type such as t3.small")]
pub struct SpotArmError {
    /// The gateway's instance type.
    pub instance_type: String,
}

/// Checks that workers built on a gateway of `arch` can run as `spot` asks.
pub fn check_spot(
    arch: crate::elf::Arch,
    spot: bool,
    instance_type: &str,
) -> Result<(), SpotArmError> {
    if spot && arch == crate::elf::Arch::Arm64 {
        return Err(SpotArmError {
            instance_type: instance_type.to_owned(),
        });
    }
    Ok(())
}

/// Regions where Fargate runs Linux tasks in some zones only, by zone ID
/// ("Supported Regions for Amazon ECS on AWS Fargate":
/// <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/AWS_Fargate-Regions.html>).
pub const FARGATE_ZONE_IDS: [(&str, &[&str]); 2] = [
    ("us-west-1", &["usw1-az1", "usw1-az3"]),
    ("ap-northeast-1", &["apne1-az1", "apne1-az2", "apne1-az4"]),
];

/// An availability zone: its name in this account and its ID everywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// `us-east-1a`.
    pub name: String,
    /// `use1-az4`.
    pub id: String,
}

/// Why no two zones fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    /// No zone where Fargate runs offers the gateway's instance type.
    #[error("no availability zone of {region} where Fargate runs offers {instance_type}: choose another --instance-type (t3.small and t3a.small are offered widely) or --region")]
    NoGatewayZone {
        /// The region.
        region: String,
        /// The gateway's instance type.
        instance_type: String,
    },
    /// Fewer than two zones where Fargate runs.
    #[error(
        "{region} has fewer than two availability zones where Fargate runs; pick another --region"
    )]
    TooFew {
        /// The region.
        region: String,
    },
}

/// The zones of the stack's subnets, from the region's available `zones`
/// (sorted by name): the gateway's (public and first private subnet), where
/// `offers` says its instance type is offered and Fargate runs, and a second
/// one where Fargate runs, for the other private subnet.
pub fn choose_zones(
    region: &str,
    instance_type: &str,
    zones: &[Zone],
    offers: impl Fn(&str) -> bool,
) -> Result<(String, String), ZoneError> {
    let only = FARGATE_ZONE_IDS
        .iter()
        .find(|(r, _)| *r == region)
        .map(|(_, ids)| *ids);
    let fargate: Vec<&Zone> = zones
        .iter()
        .filter(|z| only.is_none_or(|ids| ids.contains(&z.id.as_str())))
        .collect();
    if fargate.len() < 2 {
        return Err(ZoneError::TooFew {
            region: region.to_owned(),
        });
    }
    let gateway =
        fargate
            .iter()
            .find(|z| offers(&z.name))
            .ok_or_else(|| ZoneError::NoGatewayZone {
                region: region.to_owned(),
                instance_type: instance_type.to_owned(),
            })?;
    let other = fargate
        .iter()
        .find(|z| z.name != gateway.name)
        .expect("two zones where Fargate runs");
    Ok((gateway.name.clone(), other.name.clone()))
}

/// The memories (MiB) Fargate runs with `cpu` units; empty for no such CPU.
pub fn memories(cpu: u32) -> Vec<u32> {
    TASK_SIZES
        .iter()
        .find(|s| s.0 == cpu)
        .map(|&(_, lo, hi, step)| match step {
            0 => SMALLEST_TASK_MEMORIES.to_vec(),
            _ => (lo..=hi).step_by(step as usize).collect(),
        })
        .unwrap_or_default()
}

/// Checks that Fargate runs a task of `cpu` units and `memory` MiB.
pub fn check_size(cpu: u32, memory: u32) -> Result<(), SizeError> {
    let valid = memories(cpu);
    if valid.is_empty() {
        return Err(SizeError::Cpu { cpu });
    }
    if !valid.contains(&memory) {
        return Err(SizeError::Memory { cpu, memory });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_offer_the_gateway_and_run_fargate() {
        let z = |n: &str, id: &str| Zone {
            name: n.into(),
            id: id.into(),
        };
        let east = [
            z("us-east-1a", "use1-az3"),
            z("us-east-1b", "use1-az4"),
            z("us-east-1c", "use1-az6"),
        ];
        // The first zone does not offer the type: the gateway goes to the next.
        let got = choose_zones("us-east-1", "t4g.small", &east, |n| n != "us-east-1a").unwrap();
        assert_eq!(got, ("us-east-1b".into(), "us-east-1a".into()));
        assert_eq!(
            choose_zones("us-east-1", "x9.huge", &east, |_| false),
            Err(ZoneError::NoGatewayZone {
                region: "us-east-1".into(),
                instance_type: "x9.huge".into()
            })
        );
        // us-west-1: Fargate in usw1-az1 and usw1-az3 only.
        let west = [
            z("us-west-1a", "usw1-az2"),
            z("us-west-1b", "usw1-az1"),
            z("us-west-1c", "usw1-az3"),
        ];
        let got = choose_zones("us-west-1", "t3.small", &west, |_| true).unwrap();
        assert_eq!(got, ("us-west-1b".into(), "us-west-1c".into()));
        assert!(matches!(
            choose_zones("us-west-1", "t3.small", &west[..2], |_| true),
            Err(ZoneError::TooFew { .. })
        ));
    }

    #[test]
    fn spot_takes_no_arm64_workers() {
        use crate::elf::Arch;
        assert!(check_spot(Arch::X86_64, true, "t3.small").is_ok());
        assert!(check_spot(Arch::Arm64, false, "t4g.small").is_ok());
        let e = check_spot(Arch::Arm64, true, "t4g.small").unwrap_err();
        assert!(e.to_string().contains("(t4g.small)"), "{e}");
    }

    #[test]
    fn the_documented_pairs_and_no_others() {
        assert_eq!(memories(256), [512, 1024, 2048]);
        assert_eq!(memories(512), [1024, 2048, 3072, 4096]);
        assert_eq!(memories(1024).len(), 7);
        assert_eq!(memories(2048).first(), Some(&4096));
        assert_eq!(memories(4096).last(), Some(&30720));
        assert_eq!(memories(8192).len(), 12);
        assert_eq!(memories(16384).len(), 12);
        assert!(check_size(256, 512).is_ok());
        assert!(check_size(16384, 122880).is_ok());
        assert!(check_size(2048, 5120).is_ok());
        assert!(
            check_size(8192, 18432).is_err(),
            "8 vCPU goes in 4 GiB steps"
        );
        assert_eq!(check_size(300, 512), Err(SizeError::Cpu { cpu: 300 }));
        let e = check_size(1024, 512).unwrap_err().to_string();
        assert!(
            e.contains("with --cpu 1024 give --memory 2048, 3072, 4096, 5120, 6144, 7168, 8192"),
            "{e}"
        );
    }
}
