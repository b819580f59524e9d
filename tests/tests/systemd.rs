//! The shipped unit under a real systemd: a container made from Debian
//! packages (tests/src/images.rs) boots systemd as PID 1; the test installs
//! the unit, an agent.toml and the freshly built agent in it, with the socket
//! of a dockerd running in the container's own network namespace mounted
//! (the instance's own dockerd), and moto_server and the registry in that
//! namespace too. Then, with the unit's full hardening:
//! - `systemctl start` returns only after READY, and NAT is in place by then;
//! - the broker and image duties work (docker socket, SSM, S3, the registry):
//!   the real RabbitMQ accepts the agent's AMQP login on 192.0.2.2;
//! - `systemctl reload` re-reads the configuration;
//! - the watchdog restarts a hung (SIGSTOPped) agent, and one whose fleet
//!   poller froze;
//! - `systemctl stop` finishes within 5 s.
//!
//! systemd-in-docker works here with `--cap-add SYS_ADMIN --cap-add NET_ADMIN
//! --tmpfs /run --tmpfs /run/lock -v /sys/fs/cgroup:/sys/fs/cgroup:rw`;
//! `--privileged` is refused on these machines.

use std::time::{Duration, Instant};

use fossa_tests::docker::{Dockerd, Registry};
use fossa_tests::images::{PYTHON_FOSSA, RABBITMQ, SYSTEMD};
use fossa_tests::machine::Machine;
use fossa_tests::moto::{Moto, REGION};
use fossa_tests::netns::Netns;
use fossa_tests::{bin, venv_bin, Run, TempDir};
use fossa_tests::{eventually_blocking, holds};

/// Where the machine sees the socket directory of its own dockerd.
const INNER_DOCKER: &str = "/run/fossa-test-docker";

/// The password of the emulator's ECR token, asked from inside `ns`.
fn ecr_password(ns: &Netns, moto: &Moto) -> String {
    let code = format!(
        "import base64,boto3\nc=boto3.client('ecr',endpoint_url='{}',region_name='{REGION}',aws_access_key_id='test',aws_secret_access_key='test')\nt=c.get_authorization_token()['authorizationData'][0]['authorizationToken']\nprint(base64.b64decode(t).decode().split(':',1)[1])",
        moto.url
    );
    Run::of(ns.cmd(venv_bin("python")).args(["-c", &code]))
        .ok()
        .stdout
        .trim()
        .to_owned()
}

#[test]
fn the_hardened_unit_runs_the_agent_under_systemd() {
    // This dockerd runs the machine (a systemd container). The agent inside
    // uses a second one, started in the machine's network namespace as the
    // instance's own dockerd is: the broker container it starts (host
    // network) then binds the machine's 192.0.2.2. Its socket directory is
    // mounted into the machine before that daemon starts.
    let docker = Dockerd::start();
    let inner_dir = TempDir::new("sd-dockerd");
    let t = Instant::now();
    let image = SYSTEMD.import(&docker);
    eprintln!("figures: systemd image ready in {:?}", t.elapsed());
    let booted = Machine::boot(
        &docker,
        &image,
        &[format!("{}:{INNER_DOCKER}", inner_dir.0.display())],
    );
    let (machine, ns) = (&booted.machine, &booted.ns);
    let moto = Moto::start_in(Some(ns));
    let inner = Dockerd::start_with(Some(ns), inner_dir);
    // The machine's builds cannot reach PyPI: the base has the pinned Fossa.
    let python = PYTHON_FOSSA.import(&inner);
    let rabbitmq = RABBITMQ.import(&inner);
    let models = TempDir::new("sd-models");
    std::fs::write(
        models.0.join("etl.py"),
        "import ayeaye\n\nclass SmallEtl(ayeaye.PartitionedModel):\n    pass\n",
    )
    .unwrap();
    Run::of(
        ns.cmd(bin("fossa-bootstrap"))
            .args(["launch", "--stack", "sd", "--allow-cidr", "198.51.100.1/32"])
            .args(["--no-wait", "--endpoint-url", &moto.url])
            .arg("--agent-binary")
            .arg(bin("fossa-agent"))
            .arg("--models")
            .arg(&models.0)
            .envs(moto.env()),
    )
    .ok();
    let registry = Registry::start_in(&ecr_password(ns, &moto), Some(ns));

    // Install the agent, the shipped unit and a configuration, as user-data does.
    let moto_port = moto.url.rsplit(':').next().unwrap().to_owned();
    let files = TempDir::new("sd-files");
    let toml = files.0.join("agent.toml");
    let config = |egress: &str| {
        format!(
            "stack = \"sd\"\nregion = \"{REGION}\"\nendpoint_url = \"{}\"\nregistry = \"{}\"\n\
             base_image = \"{python}\"\nbroker_image = \"{rabbitmq}\"\n\
             broker_address = \"192.0.2.2\"\negress_check = \"{egress}\"\n\
             duties = [\"nat\", \"broker\", \"image\"]\n",
            moto.url, registry.address
        )
    };
    std::fs::write(&toml, config(&format!("127.0.0.1:{moto_port}"))).unwrap();
    // Credentials come from the instance role on EC2; here from a drop-in.
    // WatchdogSec is shortened so the watchdog's restart shows within seconds.
    let dropin = files.0.join("test.conf");
    let env: Vec<String> = moto
        .env()
        .iter()
        .map(|(k, v)| format!("Environment={k}={v}"))
        .collect();
    std::fs::write(
        &dropin,
        format!(
            "[Service]\n{}\nEnvironment=DOCKER_HOST=unix://{INNER_DOCKER}/docker.sock\nWatchdogSec=6s\n",
            env.join("\n")
        ),
    )
    .unwrap();
    machine.install_agent(&toml, &dropin);
    let score = machine.exec(&["systemd-analyze", "security", "--no-pager", "fossa-agent"]);
    eprintln!(
        "figures: {}",
        score
            .stdout
            .lines()
            .find(|l| l.contains("Overall exposure"))
            .unwrap_or("no exposure line")
    );

    // start returns only after READY, and by then NAT is in place.
    let t = Instant::now();
    let started = machine.exec(&["systemctl", "start", "fossa-agent"]);
    let start_took = t.elapsed();
    assert_eq!(
        started.code,
        0,
        "systemctl start: {}\n{}",
        started.stderr,
        machine.journal()
    );
    let nat = machine.exec(&["iptables", "-t", "nat", "-S", "FOSSA-POSTROUTING"]);
    assert!(
        nat.stdout.contains("-o eth0 -j MASQUERADE"),
        "NAT is applied when start returns: {}{}",
        nat.stdout,
        nat.stderr
    );
    let input = machine.exec(&["iptables", "-S", "FOSSA-INPUT"]);
    assert!(input.stdout.contains("--dport 5672"), "{}", input.stdout);
    // The web UI's own process starts under the unit's sandbox: it changes
    // user, drops its capabilities and loads its seccomp filter (the unit's
    // filter once refused it `seccomp`, and the UI never listened).
    fossa_tests::eventually_blocking(
        "the UI process listening on 443",
        Duration::from_secs(30),
        || {
            let ss = Run::of(ns.cmd("ss").args(["-ltnpH", "sport = :443"])).stdout;
            fossa_tests::holds(!ss.trim().is_empty(), || {
                format!("{ss}\n{}", machine.journal())
            })
        },
    );
    let journal = machine.journal();
    assert!(
        !journal.contains("the web UI is not running")
            && journal.contains("no Docker socket, no iptables"),
        "{journal}"
    );
    assert_eq!(machine.show("ActiveState"), "active");
    assert_eq!(
        machine
            .exec(&["cat", "/proc/sys/net/ipv4/ip_forward"])
            .stdout
            .trim(),
        "1"
    );
    eprintln!("figures: systemctl start returned after READY in {start_took:?}");

    // The hardening leaves the broker and the image duties working.
    let took = machine.wait_journal("accepts an AMQP login", Duration::from_secs(120));
    machine.wait_journal("pushed 127.0.0.1:", Duration::from_secs(180));
    eprintln!("figures: broker and image duties done {took:?} after READY");
    let broker = Run::of(
        inner
            .cli()
            .args(["inspect", "-f", "{{.State.Running}}", "fossa-broker"]),
    )
    .ok();
    assert_eq!(broker.stdout.trim(), "true");

    // reload re-reads the configuration, in the same process.
    let pid_before = machine.show("MainPID");
    std::fs::write(&toml, config(&format!("192.0.2.1:{moto_port}"))).unwrap();
    machine.copy_in(&toml, "/etc/fossa/agent.toml");
    let reloaded = machine.exec(&["systemctl", "reload", "fossa-agent"]);
    assert_eq!(reloaded.code, 0, "{}", reloaded.stderr);
    machine.wait_journal("configuration reloaded", Duration::from_secs(20));
    assert_eq!(
        machine.show("MainPID"),
        pid_before,
        "reload restarts nothing"
    );
    // A broken configuration on reload: kept the old one, and said so as an
    // error that journald files as one (`journalctl -p err`), while the
    // agent's ordinary lines are not errors.
    std::fs::write(&toml, "stack = \"dev\"\nthis is not toml\n").unwrap();
    machine.copy_in(&toml, "/etc/fossa/agent.toml");
    machine.exec(&["systemctl", "reload", "fossa-agent"]);
    machine.wait_journal("reload failed", Duration::from_secs(20));
    let errors = machine.exec(&[
        "journalctl",
        "-u",
        "fossa-agent",
        "-p",
        "err",
        "--no-pager",
        "-o",
        "cat",
    ]);
    assert!(errors.stdout.contains("reload failed"), "{}", errors.stdout);
    assert!(
        !errors.stdout.contains("configuration reloaded"),
        "{}",
        errors.stdout
    );
    let info = machine.exec(&[
        "journalctl",
        "-u",
        "fossa-agent",
        "-p",
        "info",
        "--no-pager",
        "-o",
        "cat",
    ]);
    assert!(
        info.stdout.contains("configuration reloaded"),
        "{}",
        info.stdout
    );
    std::fs::write(&toml, config(&format!("192.0.2.1:{moto_port}"))).unwrap();
    machine.copy_in(&toml, "/etc/fossa/agent.toml");
    assert_eq!(
        machine.show("MainPID"),
        pid_before,
        "a bad reload stops nothing"
    );

    // The watchdog restarts a hung agent.
    let t = Instant::now();
    machine.exec(&["kill", "-STOP", &pid_before]);
    eventually_blocking(
        "the watchdog restarting the hung agent",
        Duration::from_secs(60),
        || {
            let (pid, restarts) = (machine.show("MainPID"), machine.show("NRestarts"));
            let restarted = restarts == "1"
                && pid != pid_before
                && pid != "0"
                && machine.show("ActiveState") == "active";
            holds(restarted, || {
                format!(
                    "NRestarts {restarts}, MainPID {pid}:\n{}",
                    machine.journal()
                )
            })
        },
    );
    eprintln!(
        "figures: a SIGSTOPped agent was restarted by the watchdog (WatchdogSec=6s) after {:?}",
        t.elapsed()
    );
    let journal = machine.journal();
    assert!(
        journal.contains("atchdog"),
        "the journal names the watchdog:\n{journal}"
    );

    // A poller that freezes (its thread wedged, the process otherwise
    // well): the watchdog is no longer fed and systemd restarts the agent.
    let freeze = files.0.join("freeze.conf");
    std::fs::write(&freeze, "[Service]\nEnvironment=FOSSA_FAULT_FREEZE=fleet\n").unwrap();
    machine.copy_in(
        &freeze,
        "/etc/systemd/system/fossa-agent.service.d/freeze.conf",
    );
    machine.exec(&["systemctl", "daemon-reload"]);
    machine.exec(&["systemctl", "restart", "fossa-agent"]);
    let frozen_pid = machine.show("MainPID");
    // A manual restart sets the count back: an automatic one adds to it.
    let restarts_before: u32 = machine.show("NRestarts").parse().unwrap();
    let t = Instant::now();
    eventually_blocking(
        "the watchdog restarting the agent whose poller froze",
        Duration::from_secs(240),
        || {
            let (pid, restarts) = (machine.show("MainPID"), machine.show("NRestarts"));
            let restarted = restarts.parse::<u32>().unwrap_or(0) > restarts_before
                && pid != frozen_pid
                && pid != "0";
            holds(restarted, || {
                format!(
                    "NRestarts {restarts}, MainPID {pid}:\n{}",
                    machine.journal()
                )
            })
        },
    );
    eprintln!(
        "figures: an agent whose poller froze was restarted by the watchdog after {:?} (poller limit {} s, WatchdogSec=6s)",
        t.elapsed(),
        fossa_contract::limits::POLLER_STALE_SECS
    );
    let journal = machine.journal();
    assert!(
        journal.contains("the fleet's poller has finished no round for")
            && journal.contains("the watchdog is no longer fed"),
        "the agent said why before the restart:\n{journal}"
    );
    machine.exec(&[
        "rm",
        "/etc/systemd/system/fossa-agent.service.d/freeze.conf",
    ]);
    machine.exec(&["systemctl", "daemon-reload"]);
    // The restarted agent froze again; one without the fault replaces it.
    machine.exec(&["systemctl", "restart", "fossa-agent"]);

    // stop finishes within 5 s.
    let t = Instant::now();
    let stopped = machine.exec(&["systemctl", "stop", "fossa-agent"]);
    let stop_took = t.elapsed();
    assert_eq!(stopped.code, 0, "{}", stopped.stderr);
    assert!(
        stop_took < Duration::from_secs(5),
        "systemctl stop took {stop_took:?}"
    );
    assert_eq!(machine.show("ActiveState"), "inactive");
    eprintln!("figures: systemctl stop took {stop_took:?}");
}
