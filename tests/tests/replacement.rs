//! The gateway comes back by itself: `launch` makes an Auto Scaling group of
//! one and the lasting parts (interface, Elastic IP, data volume), and each
//! instance the group starts takes them over at boot with user-data's
//! `fossa:attach` section, signed with the instance role as EC2 holds it,
//! against a moto that enforces IAM. A terminated gateway is replaced by the
//! group, and the replacement gets the same interface (the broker's address
//! and the private routes' target), address and data volume; a re-run of
//! `launch` on a stack whose group is gone makes it again, with the same
//! parts.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Instant;

use fossa_tests::bootstrap::{bootstrap, launch};
use fossa_tests::moto::{Keys, Moto};
use fossa_tests::Run;

const STACK: &str = "rp";

fn role_filter(role: &str) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder()
        .name("tag:fossa:role")
        .values(role)
        .build()
}

fn stack_filter() -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder()
        .name("tag:fossa:stack")
        .values(STACK)
        .build()
}

/// Runs user-data's take-over as instance `instance` would: an IMDSv2
/// stand-in serving the role's session and the instance's id.
fn take_over(
    ud: &str,
    (keys, token): &(Keys, String),
    role: &str,
    (instance, primary): &(String, String),
) -> Run {
    let section = |name: &str| {
        ud.split(&format!("# fossa:{name} begin\n"))
            .nth(1)
            .and_then(|s| s.split(&format!("# fossa:{name} end")).next())
            .unwrap_or_else(|| panic!("user-data's {name} section"))
            .to_owned()
    };
    let mut imds = Command::new(fossa_tests::venv_bin("python"))
        .arg(fossa_tests::repo_root().join("tests/support/imds.py"))
        .env("FOSSA_IMDS_ROLE", role)
        .env("FOSSA_IMDS_KEY_ID", &keys.id)
        .env("FOSSA_IMDS_SECRET", &keys.secret)
        .env("FOSSA_IMDS_TOKEN", token)
        .env("FOSSA_IMDS_INSTANCE_ID", instance)
        .env("FOSSA_IMDS_INTERFACE_ID", primary)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut port = String::new();
    std::io::BufReader::new(imds.stdout.as_mut().unwrap())
        .read_line(&mut port)
        .unwrap();
    let script = format!("{}{}", section("fetch-agent"), section("attach")).replace(
        "http://169.254.169.254",
        &format!("http://127.0.0.1:{}", port.trim()),
    );
    let run = Run::of(
        Command::new("bash")
            .arg("-c")
            .arg(format!("set -euo pipefail\n{script}\nattach_lasting")),
    );
    let _ = imds.kill();
    let _ = imds.wait();
    run
}

struct Held {
    interface: Option<String>,
    interface_index: Option<i32>,
    volume: Option<String>,
    /// The interface the Elastic IP is on.
    address: Option<String>,
}

async fn held(ec2: &aws_sdk_ec2::Client) -> (Held, [String; 3]) {
    let eni = ec2
        .describe_network_interfaces()
        .filters(stack_filter())
        .filters(role_filter("gateway-interface"))
        .send()
        .await
        .unwrap();
    let eni = &eni.network_interfaces()[0];
    let vol = ec2
        .describe_volumes()
        .filters(stack_filter())
        .filters(role_filter("gateway-data"))
        .send()
        .await
        .unwrap();
    let vol = &vol.volumes()[0];
    let eip = ec2
        .describe_addresses()
        .filters(stack_filter())
        .send()
        .await
        .unwrap();
    let eip = &eip.addresses()[0];
    (
        Held {
            interface: eni
                .attachment()
                .and_then(|a| a.instance_id())
                .map(str::to_owned),
            interface_index: eni.attachment().and_then(|a| a.device_index()),
            volume: vol
                .attachments()
                .iter()
                .find(|a| a.state() == Some(&aws_sdk_ec2::types::VolumeAttachmentState::Attached))
                .and_then(|a| a.instance_id())
                .map(str::to_owned),
            address: eip.network_interface_id().map(str::to_owned),
        },
        [
            eni.network_interface_id().unwrap().to_owned(),
            vol.volume_id().unwrap().to_owned(),
            eip.allocation_id().unwrap().to_owned(),
        ],
    )
}

/// The group's instance now, with its primary network interface.
async fn gateway(
    asg: &aws_sdk_autoscaling::Client,
    ec2: &aws_sdk_ec2::Client,
) -> Option<(String, String)> {
    let id = group_instance(asg).await?;
    let found = ec2
        .describe_instances()
        .instance_ids(&id)
        .send()
        .await
        .ok()?;
    let primary = found
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .flat_map(|i| i.network_interfaces())
        .find(|n| n.attachment().and_then(|a| a.device_index()) == Some(0))?
        .network_interface_id()?
        .to_owned();
    Some((id, primary))
}

async fn group_instance(asg: &aws_sdk_autoscaling::Client) -> Option<String> {
    let g = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(format!("fossa-{STACK}-gateway"))
        .send()
        .await
        .unwrap();
    g.auto_scaling_groups()
        .first()?
        .instances()
        .iter()
        .find_map(|i| i.instance_id().map(str::to_owned))
}

async fn assert_held_by(
    ec2: &aws_sdk_ec2::Client,
    h: &Held,
    (instance, primary): &(String, String),
) {
    assert_eq!(
        h.interface.as_deref(),
        Some(instance.as_str()),
        "the interface"
    );
    assert_eq!(
        h.interface_index,
        Some(fossa_contract::limits::LASTING_INTERFACE_INDEX)
    );
    assert_eq!(
        h.volume.as_deref(),
        Some(instance.as_str()),
        "the data volume"
    );
    assert_eq!(
        h.address.as_deref(),
        Some(primary.as_str()),
        "the Elastic IP"
    );
    let own = ec2
        .describe_network_interfaces()
        .network_interface_ids(primary)
        .send()
        .await
        .unwrap();
    assert_eq!(
        own.network_interfaces()[0].source_dest_check(),
        Some(false),
        "it forwards"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_gateway_takes_over_the_interface_address_and_data_volume() {
    let moto = Moto::start_enforcing().await;
    Run::of(launch(&moto, STACK, &[])).ok();
    let sdk = moto.sdk().await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let asg = aws_sdk_autoscaling::Client::new(&sdk);
    let ud = fossa_tests::bootstrap::user_data(&sdk, STACK).await;
    let stack = fossa_contract::StackName::new(STACK).unwrap();
    let role = stack.gateway_role();
    let session = moto.session_like_role(&role, &format!("{role}-copy")).await;

    // The first instance takes the parts, as launch made them.
    let first = gateway(&asg, &ec2).await.expect("the group's instance");
    let run = take_over(&ud, &session, &role, &first);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let (h, ids) = held(&ec2).await;
    assert_held_by(&ec2, &h, &first).await;
    // What EC2 refuses (and moto_server.py now too): an address by
    // instance id once the instance has two interfaces.
    let by_instance = ec2
        .associate_address()
        .allocation_id(&ids[2])
        .instance_id(&first.0)
        .send()
        .await;
    let code = by_instance
        .as_ref()
        .err()
        .and_then(|e| aws_sdk_ec2::error::ProvideErrorMetadata::code(e).map(str::to_owned));
    assert_eq!(
        code.as_deref(),
        Some("InvalidInstanceID"),
        "{by_instance:?}"
    );
    for text in [&run.stdout, &run.stderr] {
        assert!(!text.contains(&session.0.secret), "a key shows: {text}");
    }

    // Terminated: the group starts another, which takes over the same parts.
    let lost = Instant::now();
    ec2.terminate_instances()
        .instance_ids(&first.0)
        .send()
        .await
        .unwrap();
    let second = fossa_tests::eventually(
        "the group replaces the gateway",
        std::time::Duration::from_secs(60),
        async || match gateway(&asg, &ec2).await {
            Some(g) if g.0 != first.0 => Ok(g),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    let run = take_over(&ud, &session, &role, &second);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let took = lost.elapsed();
    let (h, again) = held(&ec2).await;
    assert_held_by(&ec2, &h, &second).await;
    assert_eq!(again, ids, "the same interface, volume and address");
    println!(
        "replacement: terminated → parts attached to the new instance in {:.1} s (emulator)",
        took.as_secs_f64()
    );

    // Another stack's role may not take them (the tag condition's point,
    // checked by the policy evaluator since moto drops conditions): the
    // workers' execution role is refused outright.
    let exec = stack.execution_role();
    let other = moto.session_like_role(&exec, &format!("{exec}-copy")).await;
    let refused = take_over(&ud, &other, &exec, &second);
    assert_ne!(refused.code, 0, "{}", refused.stdout);

    // status lists the group and where each part is now (on AWS it also
    // says when the group last replaced the gateway, from its scaling
    // activities, which moto does not keep).
    let status = Run::of(bootstrap(&moto, &["status", "--stack", STACK])).ok();
    for needle in [
        "autoscaling:group      fossa-rp-gateway".to_owned(),
        format!(
            "data {} GiB on {}",
            fossa_contract::limits::DATA_VOLUME_GIB,
            second.0
        ),
        format!("on {}", second.0),
    ] {
        assert!(
            status.stdout.contains(&needle),
            "{needle}: {}",
            status.stdout
        );
    }

    // The group gone too (deleted by hand): launch makes it again, with the
    // same parts in its user-data.
    asg.delete_auto_scaling_group()
        .auto_scaling_group_name(format!("fossa-{STACK}-gateway"))
        .force_delete(true)
        .send()
        .await
        .unwrap();
    let rerun = Run::of(launch(&moto, STACK, &[])).ok();
    assert!(
        rerun.stderr.contains("Auto Scaling group"),
        "{}",
        rerun.stderr
    );
    let third = gateway(&asg, &ec2).await.expect("a new group's instance");
    let ud = fossa_tests::bootstrap::user_data(&sdk, STACK).await;
    let run = take_over(&ud, &session, &role, &third);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let (h, last) = held(&ec2).await;
    assert_held_by(&ec2, &h, &third).await;
    assert_eq!(last, ids);

    // destroy removes them all.
    Run::of(bootstrap(&moto, &["destroy", "--stack", STACK, "--yes"])).ok();
}

/// A loop device, detached on drop.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// user-data's mount of the data volume, run on a loop device in a mount
/// namespace of the test's own: a blank volume gets a file system and is
/// mounted at the state directory, with Docker's data bound onto it; booted
/// again (the replacement), it is not formatted again, what the first
/// instance wrote is there, and the instances file names both, as the
/// agent reads it.
#[test]
fn the_data_volume_is_formatted_once_and_comes_back_whole() {
    let dir = fossa_tests::TempDir::new("data-volume");
    let image = dir.0.join("volume.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let dev = Loop(
        Run::of(Command::new("losetup").args(["-f", "--show"]).arg(&image))
            .ok()
            .stdout
            .trim()
            .to_owned(),
    );
    let state = dir.0.join("state");
    let docker = dir.0.join("docker");
    let fstab = dir.0.join("fstab");
    std::fs::write(&fstab, "").unwrap();
    let template = include_str!("../../bootstrap/src/user-data.sh");
    let section = template
        .split("# fossa:attach begin\n")
        .nth(1)
        .and_then(|s| s.split("# fossa:attach end").next())
        .unwrap()
        .replace("fstab=/etc/fstab", &format!("fstab={}", fstab.display()))
        .replace("@STATE_DIR@", &state.display().to_string())
        .replace("/var/lib/docker", &docker.display().to_string())
        .replace("@DATA_DEVICE@", &dev.0)
        .replace("@VOLUME_ID@", "vol-0test")
        .replace("@ATTACH_WAIT_SECS@", "5");
    let boot = |instance: &str, then: &str| {
        Run::of(
            Command::new("unshare")
                .args(["-m", "--propagation", "private", "bash", "-c"])
                .arg(format!(
                    "set -euo pipefail\n{section}\ninstance_id={instance}\nmount_data\n{then}"
                )),
        )
    };
    let first = boot(
        "i-0first",
        &format!(
            "mountpoint {s}\nmountpoint {d}\necho kept > {s}/history\necho layer > {d}/layer",
            s = state.display(),
            d = docker.display()
        ),
    );
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    assert!(
        first
            .stdout
            .contains("a new data volume: making its file system"),
        "{}",
        first.stdout
    );
    // Outside the namespace nothing is mounted: what was written is on the volume.
    assert!(!state.join("history").exists());
    let second = boot(
        "i-0second",
        &format!(
            "cat {s}/history {d}/layer {s}/instances",
            s = state.display(),
            d = docker.display()
        ),
    );
    assert_eq!(second.code, 0, "{}\n{}", second.stdout, second.stderr);
    assert!(
        !second.stdout.contains("making its file system"),
        "formatted again: {}",
        second.stdout
    );
    assert!(second.stdout.contains("kept\nlayer\n"), "{}", second.stdout);
    let instances = second
        .stdout
        .lines()
        .filter(|l| l.starts_with("i-0"))
        .collect::<Vec<_>>();
    assert_eq!(instances.len(), 2, "{}", second.stdout);
    assert!(instances[0].starts_with("i-0first") && instances[1].starts_with("i-0second"));
    // Each mount is in fstab once, for the instance's own reboots.
    let fstab_lines = std::fs::read_to_string(&fstab).unwrap();
    assert_eq!(
        fstab_lines.lines().count(),
        2,
        "one line each: {fstab_lines}"
    );
}
