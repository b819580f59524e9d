//! Fargate's documented rules for a task, checked before anything is made:
//! the task sizes (CPU units with their memories). Each rule names the AWS
//! page it comes from; the Fargate emulator enforces the same table.

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
