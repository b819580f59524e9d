//! Checks that an agent binary is a Linux ELF for the instance's
//! architecture: `launch` before it uploads one, the agent before it
//! upgrades itself to one.

use std::fmt;

/// CPU architecture of the gateway instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Intel/AMD.
    X86_64,
    /// Graviton.
    Arm64,
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
        })
    }
}

impl Arch {
    /// The architecture of an EC2 instance type: Graviton families carry a `g`
    /// after the generation digit (t4g, m7g, c6gn, im4gn, x2gd), plus `a1`.
    pub fn of_instance_type(instance_type: &str) -> Arch {
        let family = instance_type.split('.').next().unwrap_or_default();
        let suffix = family.trim_start_matches(|c: char| c.is_ascii_alphabetic());
        let suffix = suffix.trim_start_matches(|c: char| c.is_ascii_digit());
        if family == "a1" || suffix.contains('g') {
            Arch::Arm64
        } else {
            Arch::X86_64
        }
    }

    /// The SSM public parameter holding the latest Amazon Linux 2023 AMI.
    pub fn al2023_parameter(self) -> String {
        format!("/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{self}")
    }
}

impl Arch {
    /// The architecture this program was built for, if it is one of ours.
    pub fn this() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

/// What the ELF header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfInfo {
    /// Machine architecture.
    pub arch: Option<Arch>,
    /// Whether it asks for a dynamic loader (PT_INTERP).
    pub dynamic: bool,
}

/// Why a file is not an agent binary for the instance.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElfError {
    /// Not an ELF file at all.
    #[error("it is not a Linux executable (no ELF header); build it with `cargo build --release -p fossa-agent --target x86_64-unknown-linux-musl` (see README)")]
    NotElf,
    /// 32-bit or big-endian.
    #[error("it is not a 64-bit little-endian ELF; build fossa-agent for x86_64 or aarch64 Linux")]
    WrongClass,
    /// Wrong machine.
    #[error("it is built for {found}, but the instance type is {wanted}; build for the {wanted} target or pick another --instance-type")]
    WrongArch {
        /// What the file is for.
        found: String,
        /// What the instance needs.
        wanted: Arch,
    },
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Reads the ELF header and program headers of `bytes`.
pub fn inspect(bytes: &[u8]) -> Result<ElfInfo, ElfError> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return Err(ElfError::NotElf);
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err(ElfError::WrongClass);
    }
    let machine = u16_at(bytes, 18).ok_or(ElfError::NotElf)?;
    let arch = match machine {
        0x3e => Some(Arch::X86_64),
        0xb7 => Some(Arch::Arm64),
        _ => None,
    };
    let phoff = u64_at(bytes, 32).ok_or(ElfError::NotElf)? as usize;
    let phentsize = u16_at(bytes, 54).ok_or(ElfError::NotElf)? as usize;
    let phnum = u16_at(bytes, 56).ok_or(ElfError::NotElf)? as usize;
    let dynamic = (0..phnum).any(|i| u32_at(bytes, phoff + i * phentsize) == Some(3));
    Ok(ElfInfo { arch, dynamic })
}

/// Checks `bytes` is an ELF for `wanted`; returns whether it is dynamically linked.
pub fn check(bytes: &[u8], wanted: Arch) -> Result<ElfInfo, ElfError> {
    let info = inspect(bytes)?;
    if info.arch != Some(wanted) {
        return Err(ElfError::WrongArch {
            found: info
                .arch
                .map_or_else(|| "another architecture".to_owned(), |a| a.to_string()),
            wanted,
        });
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_is_an_elf_for_this_machine() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let info = inspect(&me).unwrap();
        if cfg!(target_arch = "x86_64") {
            assert_eq!(info.arch, Some(Arch::X86_64));
            assert!(check(&me, Arch::Arm64)
                .unwrap_err()
                .to_string()
                .contains("arm64"));
        }
    }

    #[test]
    fn scripts_and_short_files_are_refused() {
        assert_eq!(inspect(b"#!/bin/sh\necho hi\n"), Err(ElfError::NotElf));
        assert_eq!(inspect(b""), Err(ElfError::NotElf));
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 1;
        assert_eq!(inspect(&h), Err(ElfError::WrongClass));
    }

    #[test]
    fn dynamic_flag_follows_pt_interp() {
        let mut h = vec![0u8; 64 + 56];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[18] = 0x3e;
        h[32] = 64; // phoff
        h[54] = 56; // phentsize
        h[56] = 1; // phnum
        assert!(!inspect(&h).unwrap().dynamic);
        h[64] = 3; // PT_INTERP
        assert!(inspect(&h).unwrap().dynamic);
    }
}
