//! How the UI process gives up what it could misuse, at its very start,
//! before it has a thread or has read a byte from anyone:
//!
//! 1. Started as root (the gateway), it becomes [`UI_ACCOUNT`] (or
//!    [`UI_ACCOUNT_FALLBACK`]) with no supplementary group, so no `docker`
//!    group; it keeps only `CAP_NET_BIND_SERVICE`, and only when its port is
//!    below 1024.
//! 2. Always (local mode too, where it cannot change user): no new
//!    privileges, and a seccomp filter refusing with `EPERM`: any `execve`
//!    (no iptables, no docker, no shell), any new `AF_UNIX`, `AF_NETLINK` or
//!    `AF_PACKET` socket (no Docker socket, no netfilter, no raw frames),
//!    `ptrace` and the other ways into another process's memory, signals to
//!    any process but itself, and new namespaces, mounts, BPF and keyrings.

use std::collections::BTreeMap;

use fossa_contract::names::{UI_ACCOUNT, UI_ACCOUNT_FALLBACK};
use seccompiler::{
    SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond,
    SeccompFilter, SeccompRule, TargetArch,
};

/// Why the UI process could not confine itself (it then exits: it never
/// serves unconfined).
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// Changing user or group failed.
    #[error("cannot become uid {uid}")]
    User {
        /// The user.
        uid: u32,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// Setting the capabilities failed.
    #[error("cannot drop capabilities")]
    Caps(#[source] caps::errors::CapsError),
    /// Building or loading the seccomp filter failed.
    #[error("cannot load the seccomp filter")]
    Seccomp(#[source] seccompiler::Error),
    /// Unsupported architecture.
    #[error("no seccomp filter for this architecture")]
    Arch,
}

/// Whom the UI process runs as: the parent decides, the child becomes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

impl Account {
    /// Where the agent runs as root: [`UI_ACCOUNT`] if it exists, else
    /// [`UI_ACCOUNT_FALLBACK`]. `None` when it does not run as root (local
    /// mode as a user): the UI process keeps the user, and the seccomp
    /// filter alone confines it.
    /// Also `None` when root may not change user (a unit written before
    /// privilege separation bounds CAP_SETUID away): the filter and the
    /// dropped capabilities then confine it as root.
    pub fn for_ui() -> Option<Account> {
        use caps::{CapSet, Capability};
        let may = |c| caps::has_cap(None, CapSet::Effective, c).unwrap_or(false);
        if !nix::unistd::Uid::effective().is_root()
            || !may(Capability::CAP_SETUID)
            || !may(Capability::CAP_SETGID)
        {
            return None;
        }
        [UI_ACCOUNT, UI_ACCOUNT_FALLBACK].iter().find_map(|name| {
            let u = nix::unistd::User::from_name(name).ok().flatten()?;
            Some(Account {
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            })
        })
    }
}

/// Becomes `account` (when given), keeping `CAP_NET_BIND_SERVICE` only if
/// `bind_low` and dropping every other capability, then loads the filter.
/// Must run while the process has one thread.
pub fn confine(account: Option<Account>, bind_low: bool) -> Result<(), ConfineError> {
    use caps::{CapSet, Capability};
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    let keep: caps::CapsHashSet = if bind_low {
        [Capability::CAP_NET_BIND_SERVICE].into_iter().collect()
    } else {
        Default::default()
    };
    if let Some(a) = account {
        let user = |source| ConfineError::User { uid: a.uid, source };
        // Keep the permitted set across the change of user, to keep the
        // one capability asked for; all others are dropped just after.
        keep_caps(true);
        setgroups(&[]).map_err(user)?;
        let g = Gid::from_raw(a.gid);
        setresgid(g, g, g).map_err(user)?;
        let u = Uid::from_raw(a.uid);
        setresuid(u, u, u).map_err(user)?;
    }
    caps::set(None, CapSet::Inheritable, &Default::default()).map_err(ConfineError::Caps)?;
    // Ambient capabilities (the unit gives the agent some) go with the rest.
    caps::clear(None, CapSet::Ambient).map_err(ConfineError::Caps)?;
    caps::set(None, CapSet::Effective, &keep).map_err(ConfineError::Caps)?;
    caps::set(None, CapSet::Permitted, &keep).map_err(ConfineError::Caps)?;
    keep_caps(false);
    let program: seccompiler::BpfProgram = filter(std::process::id())?
        .try_into()
        .map_err(|e: seccompiler::BackendError| ConfineError::Seccomp(e.into()))?;
    // apply_filter sets no_new_privs first.
    seccompiler::apply_filter(&program).map_err(ConfineError::Seccomp)
}

/// Whether the permitted capabilities survive a change of user.
#[allow(unsafe_code)]
fn keep_caps(on: bool) {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, libc::c_ulong::from(on), 0, 0, 0) };
}

/// The filter: everything is allowed but what the module's doc lists.
fn filter(me: u32) -> Result<SeccompFilter, ConfineError> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => TargetArch::x86_64,
        "aarch64" => TargetArch::aarch64,
        _ => return Err(ConfineError::Arch),
    };
    let cond = |arg, op, value: u64| {
        Cond::new(arg, Len::Dword, op, value)
            .map_err(|e| ConfineError::Seccomp(seccompiler::Error::Backend(e)))
    };
    let rule = |c: Vec<Cond>| {
        SeccompRule::new(c).map_err(|e| ConfineError::Seccomp(seccompiler::Error::Backend(e)))
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for sys in [
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_pidfd_open,
        libc::SYS_pidfd_getfd,
        libc::SYS_pidfd_send_signal,
        libc::SYS_tkill,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_mount,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_userfaultfd,
    ] {
        rules.insert(sys, Vec::new());
    }
    // New sockets of these families.
    let families = [libc::AF_UNIX, libc::AF_NETLINK, libc::AF_PACKET];
    let socket: Result<Vec<_>, _> = families
        .iter()
        .map(|f| cond(0, Op::Eq, *f as u64).and_then(|c| rule(vec![c])))
        .collect();
    rules.insert(libc::SYS_socket, socket?);
    // Signals: only to itself (abort() signals itself with tgkill).
    for sys in [
        libc::SYS_kill,
        libc::SYS_tgkill,
        libc::SYS_rt_sigqueueinfo,
        libc::SYS_rt_tgsigqueueinfo,
    ] {
        rules.insert(sys, vec![rule(vec![cond(0, Op::Ne, u64::from(me))?])?]);
    }
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| ConfineError::Seccomp(seccompiler::Error::Backend(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_builds_for_this_machine() {
        let f = filter(1234).unwrap();
        let p: seccompiler::BpfProgram = f.try_into().unwrap();
        assert!(p.len() > 20, "{} instructions", p.len());
    }
}
