//! Every config and unit file the repository ships parses, and the systemd
//! unit passes `systemd-analyze verify`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use fossa_contract::config::AgentToml;
use fossa_tests::{bin, repo_root, Run, TempDir};

/// Parses a systemd unit into section -> key -> values, refusing malformed lines.
fn parse_unit(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.to_owned());
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not key=value: {line}", n + 1));
        let s = section
            .clone()
            .unwrap_or_else(|| panic!("line {}: key outside a section", n + 1));
        out.entry(s)
            .or_default()
            .entry(k.trim().to_owned())
            .or_default()
            .push(v.trim().to_owned());
    }
    out
}

#[test]
fn the_unit_file_parses_and_asks_for_what_the_agent_needs() {
    let text = std::fs::read_to_string(repo_root().join("systemd/fossa-agent.service")).unwrap();
    let unit = parse_unit(&text);
    let svc = &unit["Service"];
    let one = |k: &str| svc.get(k).and_then(|v| v.last()).map(String::as_str);
    assert_eq!(one("Type"), Some("notify"));
    assert_eq!(one("Restart"), Some("always"));
    assert!(one("WatchdogSec").is_some());
    assert!(one("ExecStart")
        .unwrap()
        .contains("fossa-agent run --config /etc/fossa/agent.toml"));
    assert!(one("ExecReload").unwrap().contains("-HUP"));
    let caps = one("CapabilityBoundingSet").unwrap();
    for cap in ["CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"] {
        assert!(caps.contains(cap), "{cap}");
    }
    for (k, v) in [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
    ] {
        assert_eq!(one(k), Some(v), "{k}");
    }
    for (k, v) in [
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("PrivateDevices", "yes"),
        ("RestrictNamespaces", "yes"),
        ("UMask", "0077"),
        ("ProtectProc", "invisible"),
    ] {
        assert_eq!(one(k), Some(v), "{k}");
    }
    // Tunables are read-only but for the IPv4 sysctls NAT writes, and /run
    // is read-only but for iptables' lock.
    let rw = one("ReadWritePaths").unwrap();
    assert!(rw.contains("/proc/sys/net/ipv4"), "{rw}");
    assert!(
        rw.split_whitespace()
            .all(|p| p == "/proc/sys/net/ipv4" || p.trim_start_matches('-') == "/run/xtables.lock"),
        "nothing else is writable: {rw}"
    );
    assert!(one("SystemCallFilter").is_some());
    assert!(svc["SystemCallFilter"]
        .iter()
        .any(|f| f == "@system-service"));
    let after = unit["Unit"]["After"].join(" ");
    assert!(after.contains("network-online.target") && after.contains("docker.service"));
    assert!(
        !text.to_lowercase().contains("password"),
        "no secret in the unit"
    );
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let dir = TempDir::new("unit");
    let text = std::fs::read_to_string(repo_root().join("systemd/fossa-agent.service")).unwrap();
    // Verify the shipped unit with the freshly built agent in place of the installed path.
    let unit = dir.0.join("fossa-agent.service");
    std::fs::write(
        &unit,
        text.replace(
            "/usr/local/bin/fossa-agent",
            bin("fossa-agent").to_str().unwrap(),
        ),
    )
    .unwrap();
    let r = Run::of(Command::new("systemd-analyze").arg("verify").arg(&unit));
    assert_eq!(
        r.code, 0,
        "systemd-analyze verify (Debian package systemd): {}{}",
        r.stdout, r.stderr
    );
    assert!(
        !r.stderr.contains("fossa-agent.service:"),
        "warnings: {}",
        r.stderr
    );
}

#[test]
fn shipped_agent_configs_parse() {
    let mut n = 0;
    for dir in ["systemd", "docs"] {
        for entry in std::fs::read_dir(repo_root().join(dir)).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".toml") || name.ends_with(".toml.example") {
                AgentToml::load(Path::new(&p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
    }
    assert!(n >= 1, "the example agent.toml is shipped");
}

/// The unit's overall exposure as `systemd-analyze security` scores it
/// (0 = locked down, 10 = unprotected).
fn exposure_score(unit: &Path) -> (f64, String) {
    let r = Run::of(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(unit),
    );
    let all = format!("{}{}", r.stdout, r.stderr);
    let score = all
        .lines()
        .find_map(|l| l.split("exposure level for ").nth(1))
        .and_then(|rest| rest.split(": ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no exposure score in systemd-analyze's output:\n{all}"));
    (score, all)
}

#[test]
fn the_unit_scores_at_most_2_5_in_systemd_analyze_security() {
    let unit = repo_root().join("systemd/fossa-agent.service");
    let (score, all) = exposure_score(&unit);
    println!("systemd-analyze security: exposure {score}");
    assert!(score <= 2.5, "exposure {score} > 2.5:\n{all}");
}

/// The web UI's process runs under the unit's sandbox plus what it gives
/// itself (`agent/src/ui/confine.rs`): its own user, no capability but
/// binding its port, no new AF_UNIX/netlink/packet sockets, and a seccomp
/// filter refusing exec, ptrace, mounts, namespaces, BPF and keyrings. The
/// same settings written as a unit are scored here (the issue's aim is 2.0
/// or less).
#[test]
fn the_ui_process_scores_at_most_2_0_with_its_own_confinement_as_a_unit() {
    let shipped = std::fs::read_to_string(repo_root().join("systemd/fossa-agent.service")).unwrap();
    let mut lines: Vec<String> = Vec::new();
    for l in shipped.lines() {
        let l = match l.split('=').next().unwrap_or_default() {
            "CapabilityBoundingSet" => "CapabilityBoundingSet=CAP_NET_BIND_SERVICE".to_owned(),
            "AmbientCapabilities" => "AmbientCapabilities=".to_owned(),
            "RestrictAddressFamilies" => "RestrictAddressFamilies=AF_INET AF_INET6".to_owned(),
            // The change of user is the core's step, not the UI's.
            "SystemCallFilter" if l.contains("@setuid") => continue,
            "SystemCallFilter" if l.contains("~@privileged") => {
                "SystemCallFilter=~@privileged @resources @debug @mount @module @raw-io @reboot @swap @clock @cpu-emulation @obsolete".to_owned()
            }
            _ => l.to_owned(),
        };
        lines.push(l);
        if lines.last().is_some_and(|l| l == "[Service]") {
            lines.push("User=fossa-ui".into());
            lines.push("Group=fossa-ui".into());
        }
    }
    let dir = fossa_tests::TempDir::new("ui-unit");
    let unit = dir.0.join("fossa-ui.service");
    std::fs::write(&unit, lines.join("\n") + "\n").unwrap();
    let (score, all) = exposure_score(&unit);
    println!("systemd-analyze security, the UI process: exposure {score}");
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{all}");
}

fn version(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// Cargo.toml's rust-version is what the README and the scripts promise: it
/// must cover every locked dependency's own rust-version.
#[test]
fn the_workspace_rust_version_covers_every_locked_dependency() {
    let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let ours = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("Cargo.toml sets rust-version");
    let r = Run::of(
        Command::new("cargo")
            .args(["metadata", "--locked", "--format-version", "1"])
            .current_dir(repo_root()),
    )
    .ok();
    let meta: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let mut needed: Vec<(Vec<u64>, String)> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            let v = p["rust_version"].as_str()?;
            Some((
                version(v),
                format!("{} {v}", p["name"].as_str().unwrap_or("?")),
            ))
        })
        .collect();
    needed.sort();
    let (max, who) = needed.last().unwrap();
    println!("rust-version {ours}; the locked dependencies need {who}");
    assert!(
        version(ours) >= *max,
        "Cargo.toml says rust-version {ours}, but {who} needs more: raise it (README and scripts/lib.sh read it)"
    );
}

/// The lines of `lock` for one requirement: its pin and its hashes.
fn lock_entry(lock: &str, pin: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in lock.lines() {
        if !line.starts_with(' ') {
            inside = line.trim_end_matches(['\\', ' ']) == pin;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(!out.is_empty(), "{pin} is in the lock");
    out.trim_end().trim_end_matches('\\').to_owned() + "\n"
}

/// The worker image's and local mode's Fossa lock, as pip applies it: the
/// file PyPI serves for `ayeaye-fossa` installs, and a file of the same
/// name and version with other contents (a package replaced on an index or
/// a mirror) is refused before anything runs.
#[test]
fn the_fossa_lock_refuses_a_package_that_is_not_pypis() {
    let dir = TempDir::new("lock");
    let pin = fossa_agent::fossa::FOSSA_REQUIREMENT;
    let lock = dir.0.join("lock.txt");
    std::fs::write(
        &lock,
        lock_entry(fossa_agent::fossa::REQUIREMENTS_LOCK, pin),
    )
    .unwrap();
    let pip = |args: &[&str]| {
        let mut c = Command::new(fossa_tests::venv_bin("python"));
        c.args(["-m", "pip", "--disable-pip-version-check"])
            .args(args)
            .env_remove("PIP_FIND_LINKS");
        Run::of(&mut c)
    };
    let locked = fossa_agent::fossa::PIP_LOCKED;
    let install = |from: &Path, target: &Path| {
        let mut args = vec!["install", "-q", "--no-index", "--find-links"];
        args.push(from.to_str().unwrap());
        args.extend(locked);
        args.extend(["--target", target.to_str().unwrap(), "-r"]);
        args.push(lock.to_str().unwrap());
        pip(&args)
    };

    // PyPI's own file passes.
    let genuine = dir.0.join("genuine");
    let got = pip(&[
        "download",
        "-q",
        "--no-deps",
        "--only-binary",
        ":all:",
        "-d",
        genuine.to_str().unwrap(),
        pin,
    ]);
    assert_eq!(got.code, 0, "pip download {pin} from PyPI: {}", got.stderr);
    let ok = install(&genuine, &dir.0.join("t1"));
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(dir.0.join("t1/fossa").is_dir());

    // The same name and version, other contents: refused, nothing installed.
    let wheel = std::fs::read_dir(&genuine)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let evil = dir.0.join("evil");
    std::fs::create_dir_all(&evil).unwrap();
    let mut bytes = std::fs::read(&wheel).unwrap();
    // A zip's trailing comment: the wheel still opens, its hash differs.
    let n = bytes.len();
    bytes[n - 2..].copy_from_slice(&4u16.to_le_bytes());
    bytes.extend_from_slice(b"evil");
    std::fs::write(evil.join(wheel.file_name().unwrap()), bytes).unwrap();
    let refused = install(&evil, &dir.0.join("t2"));
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("DO NOT MATCH THE HASHES"),
        "{}",
        refused.stderr
    );
    assert!(!dir.0.join("t2/fossa").exists());
}
