//! The broker duty's container on a real RabbitMQ (Debian's package in an
//! image made with mmdebstrap): the worker user from the duty's definitions
//! file logs in over AMQP and is not an administrator; `guest` cannot log in
//! from another address; no password is in the container's environment; the
//! agent's own AMQP health check logs in and is refused as pika is. It runs
//! as on the gateway: on its own bridge, with only AMQP published on the
//! broker's address, so neither Erlang distribution nor epmd is on the
//! host's network.

use std::time::{Duration, Instant};

use fossa_agent::duties::broker::{self, Credentials};
use fossa_agent::host::amqp;
use fossa_agent::host::pins;
use fossa_contract::networks::{ContainerNetwork, BROKER};
use fossa_tests::docker::Dockerd;
use fossa_tests::images::RABBITMQ;
use fossa_tests::{eventually_blocking, venv_bin, Run};

/// Tries an AMQP login with pika from the test venv; `Ok` or pika's error.
fn amqp_login(url: &str) -> Result<(), String> {
    let code = format!(
        "import pika\nc=pika.BlockingConnection(pika.URLParameters('{url}'))\nch=c.channel()\nch.queue_declare('fossa_smoke', durable=False, auto_delete=True)\nc.close()\n"
    );
    let r = Run::of(std::process::Command::new(venv_bin("python")).args(["-c", &code]));
    if r.code == 0 {
        Ok(())
    } else {
        Err(r.stderr.lines().last().unwrap_or_default().to_owned())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_broker_duty_makes_a_worker_user_that_is_not_an_administrator() {
    let dockerd = Dockerd::start();
    let image = RABBITMQ.import(&dockerd);
    let docker = dockerd.client().await;
    let creds = Credentials {
        user: "fossa".into(),
        password: "broker-test-password-1".into(),
    };
    let address = std::net::Ipv4Addr::LOCALHOST;
    // The bridge is made in this namespace: taken away however the test ends.
    let _bridge = RemoveBridge;
    let isolated = ContainerNetwork::Isolated;
    // The image as the duty takes it: pinned at its first use.
    let state = fossa_tests::TempDir::new("broker-pins");
    let events = fossa_agent::events::Events::default();
    let pinned = pins::resolve(&docker, &state.0, &image, &events, "broker")
        .await
        .unwrap();
    assert_eq!(pinned, image, "a local image is used by its tag");
    let said = broker::reconcile(&docker, &pinned, address, &creds, isolated)
        .await
        .unwrap();
    assert!(said.contains("created"), "{said}");
    let url = broker::url(&creds, address);

    // The worker user logs in once the broker is up.
    let t = Instant::now();
    eventually_blocking(
        "the worker user logging in",
        Duration::from_secs(90),
        || {
            amqp_login(&url).map_err(|e| {
                let logs = ["logs", fossa_contract::names::BROKER_CONTAINER];
                format!("{e}\n{}", Run::of(dockerd.cli().args(logs)).stdout)
            })
        },
    );
    eprintln!(
        "figures: broker container answering AMQP {:?} after create",
        t.elapsed()
    );

    // On the host's network only AMQP, on the broker's address: Erlang
    // distribution and epmd listen in the container's own namespace.
    let ss = |port: u16| {
        Run::of(std::process::Command::new("ss").args(["-ltnH", &format!("sport = :{port}")]))
            .stdout
    };
    for port in [25672, 4369] {
        assert!(
            ss(port).trim().is_empty(),
            "{port} on the host: {}",
            ss(port)
        );
    }
    let amqp_listen = ss(5672);
    assert!(
        !amqp_listen.trim().is_empty()
            && amqp_listen
                .lines()
                .all(|l| l.contains(&format!("{address}:5672"))),
        "AMQP published elsewhere: {amqp_listen}"
    );
    // One field of the broker container's `docker inspect`.
    let inspect = |format: &str| {
        Run::of(dockerd.cli().args([
            "inspect",
            "-f",
            format,
            fossa_contract::names::BROKER_CONTAINER,
        ]))
        .ok()
        .stdout
    };
    assert_eq!(inspect("{{.HostConfig.NetworkMode}}").trim(), BROKER.name);
    // Its log is rotated by the engine, not kept for ever on the disk.
    assert_eq!(
        inspect("{{json .HostConfig.LogConfig}}").trim(),
        r#"{"Type":"json-file","Config":{"max-file":"3","max-size":"20m"}}"#
    );

    // Not an administrator; guest, if it exists at all, only from loopback.
    let users = Run::of(dockerd.cli().args([
        "exec",
        fossa_contract::names::BROKER_CONTAINER,
        "rabbitmqctl",
        "list_users",
        "-q",
    ]))
    .ok()
    .stdout;
    let fossa = users
        .lines()
        .find(|l| l.starts_with("fossa"))
        .unwrap_or_else(|| panic!("no fossa user: {users}"));
    assert!(!fossa.contains("administrator"), "{users}");
    assert!(
        !users.lines().any(|l| l.starts_with("guest")),
        "definitions loaded at boot: no default guest user\n{users}"
    );
    assert!(
        amqp_login(&format!("amqp://guest:guest@{address}:5672/%2F")).is_err(),
        "guest logged in"
    );
    assert!(amqp_login(&broker::url(
        &Credentials {
            user: "fossa".into(),
            password: "wrong".into()
        },
        address
    ))
    .is_err());

    // The duties' own health check agrees with pika: the worker user gets in,
    // a wrong password and guest are refused, with the broker's reason.
    let target = format!("{address}:5672");
    let login = |user: &'static str, password: &'static str| amqp::Login {
        address: &target,
        user,
        password,
        vhost: "/",
    };
    let limit = Duration::from_secs(5);
    amqp::check(&login("fossa", "broker-test-password-1"), limit)
        .await
        .expect("the health check logs in");
    for (user, password) in [("fossa", "not-the-password-7"), ("guest", "guest")] {
        let e = amqp::check(&login(user, password), limit)
            .await
            .expect_err("refused");
        assert!(matches!(e, amqp::AmqpError::Refused { .. }), "{user}: {e}");
        assert!(
            !e.to_string().contains(password) || password == user,
            "the password is not in the error: {e}"
        );
    }

    // No password in the container's environment (docker inspect shows it).
    let env = inspect("{{json .Config.Env}}");
    assert!(!env.contains(&creds.password), "{env}");

    // A second reconcile leaves the running broker alone.
    let again = broker::reconcile(&docker, &image, address, &creds, isolated)
        .await
        .unwrap();
    assert!(again.contains("running"), "{again}");
    amqp_login(&url).unwrap();

    // The broker's own status: figures, no alarm; then a memory high
    // watermark below what it uses: the alarm, with its figures, on the
    // line the broker duty shows.
    let status = broker::status::read(&docker, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(status.well(), "{status:?}");
    assert!(
        status.memory_used > 0 && status.memory_limit > status.memory_used,
        "{status:?}"
    );
    let t = Instant::now();
    let watermark = |to: &[&str]| {
        let mut c = dockerd.cli();
        c.args([
            "exec",
            fossa_contract::names::BROKER_CONTAINER,
            "rabbitmqctl",
            "-q",
        ])
        .arg("set_vm_memory_high_watermark")
        .args(to);
        Run::of(c).ok();
    };
    watermark(&["absolute", "10MB"]);
    let mut line = String::new();
    for _ in 0..20 {
        let s = broker::status::read(&docker, Duration::from_secs(20))
            .await
            .unwrap();
        line = s.line();
        if !s.well() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "figures: a memory alarm read {:?} after the watermark was lowered: {line}",
        t.elapsed()
    );
    assert!(
        line.starts_with("memory alarm: ") && line.contains("above its 9.5 MiB high watermark"),
        "{line}"
    );
    watermark(&["0.4"]);

    // Its tag moved to other bytes (here: the running broker committed as
    // a new image): refused, naming the pin and the way to accept it.
    let moved = Run::of(
        dockerd
            .cli()
            .args(["commit", fossa_contract::names::BROKER_CONTAINER]),
    )
    .ok()
    .stdout;
    Run::of(dockerd.cli().args(["tag", moved.trim(), &image])).ok();
    let refused = pins::resolve(&docker, &state.0, &image, &events, "broker")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("its tag was moved") && refused.contains(pins::PINS_FILE),
        "{refused}"
    );
    let first = events.list();
    assert!(
        first
            .iter()
            .any(|e| e.message.contains("pinned") && e.message.contains(&image)),
        "{first:?}"
    );
    // Accepted by deleting the pin: pinned again, to the new image.
    std::fs::remove_file(state.0.join(pins::PINS_FILE)).unwrap();
    assert_eq!(
        pins::resolve(&docker, &state.0, &image, &events, "broker")
            .await
            .unwrap(),
        image
    );
    let kept = std::fs::read_to_string(state.0.join(pins::PINS_FILE)).unwrap();
    assert!(kept.contains(moved.trim()), "{kept}");
    Run::of(
        dockerd
            .cli()
            .args(["rm", "-f", fossa_contract::names::BROKER_CONTAINER]),
    )
    .ok();
    Run::of(dockerd.cli().args(["network", "rm", BROKER.name])).ok();
}

/// Deletes the broker's bridge from this namespace (Docker leaves it when
/// the daemon is killed first).
struct RemoveBridge;

impl Drop for RemoveBridge {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", BROKER.bridge])
            .output();
    }
}
