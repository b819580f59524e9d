//! The agent upgrades itself in place under the shipped unit and a real
//! systemd: a re-run of `launch` with a new binary makes it download, check,
//! stage and swap to it, and systemd restarts into it while NAT stays in the
//! kernel. Crashes at each upgrade point leave the old or the new agent
//! running, never none; bad binaries are refused with the reason; a binary
//! that never becomes ready is rolled back.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fossa_tests::docker::Dockerd;
use fossa_tests::images::SYSTEMD;
use fossa_tests::machine::Machine;
use fossa_tests::moto::{Moto, REGION};
use fossa_tests::netns::Netns;
use fossa_tests::{bin, Run, TempDir};
use fossa_tests::{eventually_blocking, holds};
use sha2::{Digest, Sha256};

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The agent binary with `tag` appended: the same program under another SHA-256.
fn variant(dir: &Path, tag: &str) -> (std::path::PathBuf, String) {
    let mut bytes = std::fs::read(bin("fossa-agent")).unwrap();
    bytes.extend_from_slice(format!("\0fossa-upgrade-test-{tag}").as_bytes());
    let path = dir.join(format!("fossa-agent-{tag}"));
    std::fs::write(&path, &bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    (path, sha(&bytes))
}

fn launch(ns: &Netns, moto: &Moto, agent: &Path) -> Run {
    launch_with(ns, moto, agent, &["--no-wait"])
}

fn launch_with(ns: &Netns, moto: &Moto, agent: &Path, extra: &[&str]) -> Run {
    Run::of(
        ns.cmd(bin("fossa-bootstrap"))
            .args(["launch", "--stack", "up", "--allow-cidr", "198.51.100.1/32"])
            .args(["--endpoint-url", &moto.url])
            .args(extra)
            .arg("--agent-binary")
            .arg(agent)
            .envs(moto.env()),
    )
    .ok()
}

/// Puts `bytes` as the agent object and `wanted` as agent-sha256, as a
/// mistaken or tampered upload would (launch itself refuses such binaries).
fn inject(ns: &Netns, moto: &Moto, bytes: &[u8], wanted: &str, dir: &Path) {
    let file = dir.join("injected");
    std::fs::write(&file, bytes).unwrap();
    let code = format!(
        "import boto3\nkw=dict(endpoint_url='{url}',region_name='{REGION}',aws_access_key_id='test',aws_secret_access_key='test')\n\
         ssm=boto3.client('ssm',**kw)\ns3=boto3.client('s3',**kw)\n\
         b=ssm.get_parameter(Name='/fossa/up/config')['Parameter']['Value']\nimport json\nbucket=json.loads(b)['bucket']\n\
         s3.upload_file('{file}',bucket,'agent/fossa-agent')\n\
         ssm.put_parameter(Name='/fossa/up/agent-sha256',Value='{wanted}',Type='String',Overwrite=True)\n",
        url = moto.url,
        file = file.display()
    );
    Run::of(ns.cmd(fossa_tests::venv_bin("python")).args(["-c", &code])).ok();
}

/// The binary systemd's main process of fossa-agent runs.
fn running_exe(machine: &Machine) -> String {
    machine
        .sh("readlink /proc/$(systemctl show -p MainPID --value fossa-agent)/exe")
        .stdout
        .trim()
        .to_owned()
}

/// Waits until the journal past byte `since` holds `needle`.
fn wait_after(machine: &Machine, since: usize, needle: &str, within: Duration) -> Duration {
    let t = Instant::now();
    eventually_blocking(&format!("{needle:?} in the journal"), within, || {
        let j = machine.journal();
        let new = j.get(since..).unwrap_or_default();
        holds(new.contains(needle), || new.to_owned())
    });
    t.elapsed()
}

fn set_fault(machine: &Machine, files: &Path, fault: Option<&str>) {
    let path = files.join("fault.conf");
    let text = match fault {
        Some(f) => format!("[Service]\nEnvironment=FOSSA_FAULT_EXIT_AT={f}\n"),
        None => "[Service]\n".to_owned(),
    };
    std::fs::write(&path, text).unwrap();
    machine.copy_in(
        &path,
        "/etc/systemd/system/fossa-agent.service.d/fault.conf",
    );
    machine.exec(&["systemctl", "daemon-reload"]);
}

#[test]
fn the_agent_upgrades_itself_in_place_refuses_bad_binaries_and_rolls_back() {
    let docker = Dockerd::start();
    let image = SYSTEMD.import(&docker);
    let booted = Machine::boot(&docker, &image, &[]);
    let (machine, ns) = (&booted.machine, &booted.ns);
    let moto = Moto::start_in(Some(ns));
    let files = TempDir::new("upgrade");
    let a = std::fs::read(bin("fossa-agent")).unwrap();
    let sha_a = sha(&a);
    launch(ns, &moto, &bin("fossa-agent"));

    // Installed as user-data does, with the duties this test needs.
    let toml = files.0.join("agent.toml");
    std::fs::write(
        &toml,
        format!(
            "stack = \"up\"\nregion = \"{REGION}\"\nendpoint_url = \"{}\"\negress_check = \"{}\"\nduties = [\"nat\", \"upgrade\"]\n",
            moto.url,
            moto.url.trim_start_matches("http://")
        ),
    )
    .unwrap();
    let env: Vec<String> = moto
        .env()
        .iter()
        .map(|(k, v)| format!("Environment={k}={v}"))
        .collect();
    let dropin = files.0.join("test.conf");
    std::fs::write(&dropin, format!("[Service]\n{}\n", env.join("\n"))).unwrap();
    machine.install_agent(&toml, &dropin);
    set_fault(machine, &files.0, None);
    let started = machine.exec(&["systemctl", "start", "fossa-agent"]);
    assert_eq!(started.code, 0, "{}\n{}", started.stderr, machine.journal());
    wait_after(
        machine,
        0,
        &format!("({}) runs, as agent-sha256 wants", &sha_a[..12]),
        Duration::from_secs(30),
    );
    assert_eq!(running_exe(machine), "/usr/local/bin/fossa-agent");

    // 1. A new binary: launch uploads it, the agent swaps to it and systemd
    //    restarts into it; NAT stays in place throughout.
    let (b, sha_b) = variant(&files.0, "b");
    let since = machine.journal().len();
    let t = Instant::now();
    let nat_gaps = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let samples = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (gaps, samples, watching, ns_name) = (
            nat_gaps.clone(),
            samples.clone(),
            watching.clone(),
            ns.name.clone(),
        );
        std::thread::spawn(move || {
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                let out = Run::of(Command::new("ip").args([
                    "netns",
                    "exec",
                    &ns_name,
                    "iptables",
                    "-t",
                    "nat",
                    "-S",
                    "FOSSA-POSTROUTING",
                ]));
                samples.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if !out.stdout.contains("MASQUERADE") {
                    gaps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    // launch follows until the uploaded binary is the one running (no
    // workers here: the agent runs no cluster duty in this test).
    let followed = launch_with(
        ns,
        &moto,
        &b,
        &["--workers", "0", "--ui-address", "127.0.0.1:443"],
    );
    let upgrade_took = t.elapsed();
    assert!(
        followed.stderr.contains(&format!(
            "Agent: the uploaded binary runs ({})",
            &sha_b[..12]
        )),
        "{}",
        followed.stderr
    );
    wait_after(
        machine,
        since,
        &format!("the upgraded agent {} is ready", &sha_b[..12]),
        Duration::from_secs(10),
    );
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    watcher.join().unwrap();
    assert_eq!(
        nat_gaps.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "NAT was missing during the upgrade"
    );
    assert_eq!(
        running_exe(machine),
        format!("/var/lib/fossa/bin/fossa-agent-{sha_b}")
    );
    eprintln!(
        "FIGURE upgrade: re-run of launch, following it, -> returned with the new agent running in {upgrade_took:?}; NAT present in all {} samples",
        samples.load(std::sync::atomic::Ordering::Relaxed)
    );

    // 2. A crash at each upgrade point: systemd brings back the old agent
    //    (staged) or the new one (swapped); never none.
    for (point, tag) in [("upgrade-staged", "c"), ("upgrade-swapped", "d")] {
        let before = running_exe(machine);
        set_fault(machine, &files.0, Some(point));
        machine.exec(&["systemctl", "restart", "fossa-agent"]);
        let (next, sha_next) = variant(&files.0, tag);
        let since = machine.journal().len();
        launch(ns, &moto, &next);
        wait_after(
            machine,
            since,
            &format!("fault injection: exiting at {point}"),
            Duration::from_secs(60),
        );
        // Restarted by systemd within RestartSec and ready again.
        let what = format!("an agent running after the crash at {point}");
        let after = eventually_blocking(&what, Duration::from_secs(30), || {
            let exe = running_exe(machine);
            let running = machine.show("SubState") == "running" && !exe.is_empty();
            if running {
                Ok(exe)
            } else {
                Err("none")
            }
        });
        let new = format!("/var/lib/fossa/bin/fossa-agent-{sha_next}");
        match point {
            "upgrade-staged" => {
                assert_eq!(after, before, "the old agent runs after a crash at {point}")
            }
            _ => assert_eq!(after, new, "the new agent runs after a crash at {point}"),
        }
        set_fault(machine, &files.0, None);
        let since = machine.journal().len();
        machine.exec(&["systemctl", "restart", "fossa-agent"]);
        wait_after(
            machine,
            since,
            &format!("({}) runs, as agent-sha256 wants", &sha_next[..12]),
            Duration::from_secs(90),
        );
        assert_eq!(running_exe(machine), new);
    }
    let good = running_exe(machine);

    // 3. Bad binaries are refused with the reason; the agent keeps running.
    let text = b"#!/bin/sh\necho fossa-agent 9.9.9\n".to_vec();
    let mut arm = a.clone();
    arm[18] = 0xb7;
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static");
    let cases: Vec<(Vec<u8>, String, &str)> = vec![
        (text.clone(), sha(&text), "it is not a Linux executable"),
        (arm.clone(), sha(&arm), "it is built for arm64"),
        (a.clone(), "0".repeat(64), "but agent-sha256 says 0000"),
        (
            busybox.clone(),
            sha(&busybox),
            "it does not run as fossa-agent",
        ),
    ];
    for (bytes, wanted, reason) in cases {
        let since = machine.journal().len();
        inject(ns, &moto, &bytes, &wanted, &files.0);
        wait_after(machine, since, reason, Duration::from_secs(45));
        assert!(
            machine.journal()[since..]
                .contains(&format!("refused the agent binary {}", &wanted[..12])),
            "{}",
            &machine.journal()[since..]
        );
        assert_eq!(
            running_exe(machine),
            good,
            "a refused binary changes nothing"
        );
    }

    // 4. A binary that never becomes ready is rolled back after two starts.
    let (e, sha_e) = variant(&files.0, "e");
    set_fault(
        machine,
        &files.0,
        Some(&format!("before-ready:{}", &sha_e[..16])),
    );
    let since = machine.journal().len();
    let t = Instant::now();
    launch(ns, &moto, &e);
    wait_after(
        machine,
        since,
        &format!(
            "agent-sha256 wants {}, which was rolled back: it did not become ready in 2 starts",
            &sha_e[..12]
        ),
        Duration::from_secs(120),
    );
    eprintln!(
        "FIGURE a binary that never becomes ready rolled back in {:?}",
        t.elapsed()
    );
    assert_eq!(running_exe(machine), good, "the previous agent runs again");
    // The launcher says it rolled back as it starts the previous agent;
    // the unit is active once that agent says it is ready.
    fossa_tests::eventually_blocking("the unit active again", Duration::from_secs(60), || {
        let state = machine.show("ActiveState");
        fossa_tests::holds(state == "active", || state.clone())
    });
}
