//! The NAT duty with real iptables inside network namespaces the test makes:
//! a private task host reaches an "internet" host through the gateway, with
//! its source rewritten to the gateway's outer address.

use std::time::{Duration, Instant};

use fossa_tests::moto::{Moto, REGION};
use fossa_tests::netns::{NatLab, Netns, Which, GATEWAY_OUTER, PRIVATE_CIDR};
use fossa_tests::process::Process;
use fossa_tests::{bin, eventually_blocking, Run, TempDir};

fn nat(gw: &Netns, action: &str) -> Run {
    Run::of(
        gw.cmd(bin("fossa-agent"))
            .args(["nat", action, "--private-cidr", PRIVATE_CIDR]),
    )
}

fn count(ruleset: &str, needle: &str) -> usize {
    ruleset.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn nat_rewrites_the_source_and_remove_restores_the_ruleset() {
    let mut lab = NatLab::new("a");
    assert!(
        lab.probe().is_err(),
        "without NAT the task host must not reach the internet"
    );
    lab.touch_tables();
    let before = lab.gw.ruleset();

    let applied = nat(&lab.gw, "apply").ok();
    assert!(
        applied.stdout.contains("via gwout"),
        "egress found from the default route: {}",
        applied.stdout
    );
    assert_eq!(
        lab.probe().unwrap(),
        GATEWAY_OUTER,
        "source rewritten to the gateway's outer address"
    );

    // Tasks reach only the broker on the gateway itself; the gateway's own
    // connections to them (its polls) are answered.
    for port in [5672, 443, 4369, 25672] {
        lab.listen(Which::Gateway, "192.168.2.1", port);
    }
    assert_eq!(
        lab.connect(Which::Task, "192.168.2.1", 5672).as_deref(),
        Ok("192.168.2.10"),
        "the broker's port is open to the tasks"
    );
    for port in [443, 4369, 25672] {
        assert!(
            lab.connect(Which::Task, "192.168.2.1", port).is_err(),
            "a task reached the gateway's port {port}"
        );
    }
    // Link-local (the instance metadata service) is never forwarded for a
    // task: a stand-in at 169.254.169.254 beyond the gateway answers the
    // internet host, not the task, and does once the DROP is taken away.
    lab.internet_address("169.254.169.254");
    lab.listen(Which::Internet, "169.254.169.254", 80);
    assert!(lab.connect(Which::Internet, "169.254.169.254", 80).is_ok());
    assert!(
        lab.connect(Which::Task, "169.254.169.254", 80).is_err(),
        "a task reached the metadata stand-in through the gateway"
    );
    let drop = [
        "-D",
        "FOSSA-FORWARD",
        "-s",
        "192.168.2.0/24",
        "-d",
        "169.254.0.0/16",
        "-j",
        "DROP",
    ];
    lab.gw.iptables(&drop);
    assert_eq!(
        lab.connect(Which::Task, "169.254.169.254", 80).as_deref(),
        Ok(GATEWAY_OUTER),
        "without the DROP the stand-in is reached (so the check above is real)"
    );
    nat(&lab.gw, "apply").ok();
    assert!(lab.connect(Which::Task, "169.254.169.254", 80).is_err());
    // The web UI's process (the agent runs as root here, so it would be
    // `nobody`) may not ask the metadata stand-in either, while the agent
    // itself may.
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("a nobody user")
        .uid
        .as_raw();
    assert!(
        lab.connect(Which::Gateway, "169.254.169.254", 80).is_ok(),
        "the agent reaches IMDS"
    );
    let refused = lab.connect_as(Which::Gateway, nobody, "169.254.169.254", 80);
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("refused")),
        "the UI's user reached the metadata stand-in: {refused:?}"
    );
    lab.listen(Which::Task, "192.168.2.10", 2345);
    assert_eq!(
        lab.connect(Which::Gateway, "192.168.2.10", 2345).as_deref(),
        Ok("192.168.2.1"),
        "the gateway polls its workers"
    );

    for _ in 0..10 {
        let again = nat(&lab.gw, "apply").ok();
        assert!(!again.stdout.contains("added"), "{}", again.stdout);
    }
    let rules = lab.gw.ruleset();
    // The private subnet's, and the build bridge's (172.30.252.0/24), once each.
    assert_eq!(count(&rules, "-j MASQUERADE"), 2, "{rules}");
    assert_eq!(count(&rules, "-s 172.30.252.0/24"), 1, "{rules}");
    assert_eq!(count(&rules, "-A FORWARD -j FOSSA-FORWARD"), 1, "{rules}");
    assert_eq!(
        count(&rules, "-A POSTROUTING -j FOSSA-POSTROUTING"),
        1,
        "{rules}"
    );
    assert_eq!(count(&rules, "-A INPUT -j FOSSA-INPUT"), 1, "{rules}");

    let check = nat(&lab.gw, "check");
    assert_eq!(check.code, 0, "{}", check.stdout);
    lab.gw.iptables(&["-t", "nat", "-F", "FOSSA-POSTROUTING"]);
    let check = nat(&lab.gw, "check");
    assert_eq!(check.code, 1);
    assert!(
        check
            .stdout
            .lines()
            .any(|l| l.starts_with("MISSING") && l.contains("MASQUERADE")),
        "{}",
        check.stdout
    );

    nat(&lab.gw, "remove").ok();
    assert_eq!(
        lab.gw.ruleset(),
        before,
        "remove restores the original ruleset"
    );
    assert!(lab.probe().is_err() || lab.probe().as_deref() != Ok(GATEWAY_OUTER));
}

#[test]
fn nat_works_behind_dockers_forward_drop() {
    let lab = NatLab::new("d");
    lab.dockerize();
    lab.touch_tables();
    let before = lab.gw.ruleset();
    nat(&lab.gw, "apply").ok();
    assert_eq!(lab.probe().unwrap(), GATEWAY_OUTER);
    let rules = lab.gw.ruleset();
    assert_eq!(
        count(&rules, "-A DOCKER-USER -j FOSSA-FORWARD"),
        1,
        "{rules}"
    );
    assert!(
        rules.contains(":FORWARD DROP"),
        "the FORWARD policy is left alone: {rules}"
    );
    nat(&lab.gw, "remove").ok();
    assert_eq!(lab.gw.ruleset(), before);
}

/// The service in the gateway namespace, reading its config from SSM on a moto_server there.
struct Service(Process);

impl Service {
    fn start(
        gw: &Netns,
        env: &[(&'static str, String)],
        config: &std::path::Path,
        log: std::path::PathBuf,
    ) -> Service {
        let mut cmd = gw.cmd(bin("fossa-agent"));
        cmd.args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .envs(env.iter().cloned());
        Service(Process::spawn(&mut cmd, log.with_extension("out"), log))
    }

    fn wait_log(&self, needle: &str, within: Duration) {
        self.0.wait_log_since(0, &[needle], within);
    }

    /// SIGTERM; returns how long the agent took to exit.
    fn stop(mut self) -> Duration {
        let t = Instant::now();
        // `ip netns exec` execs the agent, so the pid is the agent's.
        let code = self.0.stop("TERM", Duration::from_secs(10));
        assert_eq!(
            code,
            0,
            "the agent exits cleanly on SIGTERM:\n{}",
            self.0.log()
        );
        t.elapsed()
    }
}

#[test]
fn the_service_applies_nat_on_every_start_and_its_loop_repairs_it() {
    let mut lab = NatLab::new("s");
    lab.dockerize();
    let moto = Moto::start_in(Some(&lab.gw));
    let dir = TempDir::new("nat-svc");
    // The stack config comes from a real launch against the emulator.
    let launch = Run::of(
        lab.gw
            .cmd(bin("fossa-bootstrap"))
            .args([
                "launch",
                "--stack",
                "nat",
                "--allow-cidr",
                "198.51.100.1/32",
                "--no-wait",
                // A /22 VPC: its private subnets are /24s, the lab's 192.168.2.0/24 first.
                "--vpc-cidr",
                "192.168.0.0/22",
                "--endpoint-url",
                &moto.url,
            ])
            .arg("--agent-binary")
            .arg(bin("fossa-agent"))
            .envs(moto.env()),
    )
    .ok();
    assert!(
        launch.stderr.contains("SSM parameter /fossa/nat/config"),
        "{}",
        launch.stderr
    );
    let config = dir.0.join("agent.toml");
    std::fs::write(
        &config,
        format!("stack = \"nat\"\nregion = \"{REGION}\"\nendpoint_url = \"{}\"\nstate_dir = \"{}\"\nduties = [\"nat\"]\negress_check = \"203.0.113.2:8080\"\n", moto.url, dir.0.display()),
    )
    .unwrap();
    let mut stops = Vec::new();
    for i in 0..10 {
        let svc = Service::start(
            &lab.gw,
            &moto.env(),
            &config,
            dir.0.join(format!("agent-{i}.log")),
        );
        svc.wait_log("ready", Duration::from_secs(30));
        assert_eq!(lab.probe().unwrap(), GATEWAY_OUTER, "start {i}");
        if i == 0 {
            // The UI reports NAT and the egress self-test (to the internet host here).
            let pw = Run::of(
                lab.gw
                    .cmd(bin("fossa-bootstrap"))
                    .args(["password", "--stack", "nat", "--endpoint-url", &moto.url])
                    .envs(moto.env()),
            )
            .ok();
            let detail = eventually_blocking("NAT reported ok", Duration::from_secs(20), || {
                let r = Run::of(lab.gw.cmd("curl").args([
                    "-sk",
                    "-u",
                    &format!("fossa:{}", pw.stdout.trim()),
                    "https://127.0.0.1/api/v1/overview",
                ]));
                let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_default();
                match v["nat"]["detail"].as_str() {
                    Some(detail) if v["nat"]["ok"] == true => Ok(detail.to_owned()),
                    _ => Err(r.stdout),
                }
            });
            assert!(
                detail.contains("egress self-test: 203.0.113.2:8080 reached"),
                "{detail}"
            );
        }
        stops.push(svc.stop());
    }
    let rules = lab.gw.ruleset();
    assert_eq!(
        count(&rules, "-j MASQUERADE"),
        3,
        "one per private subnet and the build bridge's, once: {rules}"
    );
    assert_eq!(count(&rules, "-A FORWARD -j FOSSA-FORWARD"), 1, "{rules}");
    assert_eq!(
        count(&rules, "-A DOCKER-USER -j FOSSA-FORWARD"),
        1,
        "{rules}"
    );
    assert!(
        stops.iter().all(|d| *d < Duration::from_secs(5)),
        "SIGTERM stops within 5 s: {stops:?}"
    );

    // A rule deleted behind the agent's back is reported by check and re-added by the loop.
    let svc = Service::start(
        &lab.gw,
        &moto.env(),
        &config,
        dir.0.join("agent-repair.log"),
    );
    svc.wait_log("ready", Duration::from_secs(30));
    lab.gw.iptables(&[
        "-t",
        "nat",
        "-D",
        "FOSSA-POSTROUTING",
        "-s",
        PRIVATE_CIDR,
        "-o",
        "gwout",
        "-j",
        "MASQUERADE",
    ]);
    let check = Run::of(
        lab.gw
            .cmd(bin("fossa-agent"))
            .args(["nat", "check", "--config"])
            .arg(&config)
            .envs(moto.env()),
    );
    assert_eq!(check.code, 1, "{}\n{}", check.stdout, check.stderr);
    assert!(lab.probe().is_err());
    svc.wait_log(
        "NAT applied via gwout: added rule -t nat FOSSA-POSTROUTING",
        Duration::from_secs(45),
    );
    assert_eq!(lab.probe().unwrap(), GATEWAY_OUTER);

    let pw = Run::of(
        lab.gw
            .cmd(bin("fossa-bootstrap"))
            .args(["password", "--stack", "nat", "--endpoint-url", &moto.url])
            .envs(moto.env()),
    )
    .ok();
    // NAT bytes: the agent counts them from its own rules' counters, and a
    // flushed chain (counters gone, rules re-added) or a restart neither
    // loses nor doubles what was counted.
    let overview = |lab: &NatLab| -> serde_json::Value {
        let r = Run::of(lab.gw.cmd("curl").args([
            "-sk",
            "-u",
            &format!("fossa:{}", pw.stdout.trim()),
            "https://127.0.0.1/api/v1/overview",
        ]));
        serde_json::from_str(&r.stdout).unwrap_or_default()
    };
    let nat_bytes = |lab: &NatLab| overview(lab)["cost"]["nat_bytes"].as_u64().unwrap_or(0);
    let wait_bytes = |lab: &NatLab, at_least: u64| {
        let what = format!("the overview counting {at_least} NAT bytes");
        eventually_blocking(&what, Duration::from_secs(45), || {
            let n = nat_bytes(lab);
            if n >= at_least {
                Ok(n)
            } else {
                Err(format!("has {n}: {}", overview(lab)))
            }
        })
    };
    const MB: u64 = 1_000_000;
    let base = nat_bytes(&lab);
    lab.send_bytes(3 * MB).unwrap();
    let first = wait_bytes(&lab, base + 3 * MB);
    lab.gw.iptables(&["-t", "filter", "-F", "FOSSA-FORWARD"]);
    svc.wait_log(
        "added rule -t filter FOSSA-FORWARD",
        Duration::from_secs(45),
    );
    lab.send_bytes(2 * MB).unwrap();
    let second = wait_bytes(&lab, first + 2 * MB);
    assert!(
        second < first + 3 * MB,
        "nothing counted twice: {first} then {second}"
    );
    svc.stop();
    let svc = Service::start(
        &lab.gw,
        &moto.env(),
        &config,
        dir.0.join("agent-counted.log"),
    );
    svc.wait_log("ready", Duration::from_secs(30));
    let after = wait_bytes(&lab, second);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        after < second + MB,
        "a restart does not count the kernel's totals again: {second} then {after}"
    );
    let cost = overview(&lab)["cost"].clone();
    assert!(
        cost["nat_gateway_month_to_date"].as_f64().unwrap() > 0.0,
        "{cost}"
    );
    assert!(
        cost["basis"]
            .as_str()
            .unwrap()
            .contains(fossa_contract::prices::PRICES_DATE),
        "{cost}"
    );
    eprintln!("FIGURE NAT bytes counted: {first} after 3 MB, {second} after a flush and 2 MB more, {after} after a restart");
    svc.stop();
}

/// iptables-legacy takes the xtables lock, and another program (a firewall
/// script, a stuck `iptables -L`) may hold it: the agent waits 10 s for it
/// (`-w 10`), then fails naming the call and the lock, instead of waiting
/// for ever or taking a rule for missing. The lock is this test's own file,
/// bound over /run/xtables.lock in a private mount namespace.
#[test]
fn an_xtables_lock_held_elsewhere_ends_the_apply_at_its_wait_naming_it() {
    let gw = Netns::new("lock");
    let dir = TempDir::new("xtables");
    let lock = dir.0.join("xtables.lock");
    let bin_dir = dir.0.join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::fs::write(&lock, "").unwrap();
    std::os::unix::fs::symlink("/usr/sbin/iptables-legacy", bin_dir.join("iptables")).unwrap();
    // The bind needs a file to cover; iptables and the unit make it anyway.
    if !std::path::Path::new("/run/xtables.lock").exists() {
        std::fs::write("/run/xtables.lock", "").unwrap();
    }
    let mut holder = std::process::Command::new("flock")
        .arg("-x")
        .arg(&lock)
        .args(["sleep", "60"])
        .spawn()
        .expect("flock is installed (util-linux)");
    eventually_blocking("the lock held", Duration::from_secs(10), || {
        let free = std::process::Command::new("flock")
            .args(["-n"])
            .arg(&lock)
            .arg("true")
            .status()
            .unwrap()
            .success();
        if free {
            Err("not yet")
        } else {
            Ok(())
        }
    });
    let script = format!(
        "mount --bind {lock} /run/xtables.lock && exec nsenter --net=/run/netns/{ns} env PATH={bin}:/usr/sbin:/usr/bin:/sbin:/bin {agent} nat apply --private-cidr {PRIVATE_CIDR} --egress-interface lo",
        lock = lock.display(),
        ns = gw.name,
        bin = bin_dir.display(),
        agent = bin("fossa-agent").display(),
    );
    let started = Instant::now();
    let r = Run::of(
        std::process::Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(&script),
    );
    let took = started.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    eprintln!("figures: NAT apply with the xtables lock held ended after {took:?}");
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(30),
        "{took:?}"
    );
    let line = r.stderr.trim();
    assert!(
        line.contains("iptables -t filter -S FOSSA-FORWARD failed")
            && line.contains("Another app is currently holding the xtables lock"),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1, "one line: {line}");
}
