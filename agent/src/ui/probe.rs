//! `fossa-agent ui-serve --probe`: after confining itself exactly as the UI
//! process does, try each thing a remote code execution in the UI would
//! want, and print one line for each: `<what>: refused (<error>)` or
//! `<what>: ALLOWED`. The tests run it with the arguments the agent gave
//! its real UI process.

use std::io::Write;

/// Prints the report on standard output.
pub(super) fn report() {
    let mut out = std::io::stdout().lock();
    let mut line = |what: &str, r: std::io::Result<()>| {
        let _ = match r {
            Ok(()) => writeln!(out, "{what}: ALLOWED"),
            Err(e) => writeln!(out, "{what}: refused ({e})"),
        };
    };
    line(
        "uid 0",
        (nix::unistd::getuid().is_root())
            .then_some(())
            .ok_or_else(|| std::io::Error::other(format!("uid {}", nix::unistd::getuid()))),
    );
    line(
        "docker socket",
        std::os::unix::net::UnixStream::connect("/var/run/docker.sock").map(drop),
    );
    line(
        "run iptables",
        std::process::Command::new("iptables")
            .args(["-w", "-S"])
            .output()
            .map(drop),
    );
    line(
        "run a shell",
        std::process::Command::new("/bin/sh")
            .args(["-c", "true"])
            .status()
            .map(drop),
    );
    line(
        "netlink socket",
        nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Netlink,
            nix::sys::socket::SockType::Raw,
            nix::sys::socket::SockFlag::empty(),
            nix::sys::socket::SockProtocol::NetlinkRoute,
        )
        .map(drop)
        .map_err(std::io::Error::from),
    );
    line(
        "signal the agent",
        nix::sys::signal::kill(nix::unistd::getppid(), None).map_err(std::io::Error::from),
    );
    line(
        "raw IP socket",
        nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet,
            nix::sys::socket::SockType::Raw,
            nix::sys::socket::SockFlag::empty(),
            nix::sys::socket::SockProtocol::Icmp,
        )
        .map(drop)
        .map_err(std::io::Error::from),
    );
}
