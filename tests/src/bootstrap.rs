//! `fossa-bootstrap` commands pointed at a moto_server, for the tests.

use std::process::Command;

use crate::bin;
use crate::moto::Moto;

/// The UI CIDR the tests launch with.
pub const ALLOW: &str = "203.0.113.7/32";

/// `fossa-bootstrap ARGS` against `moto`, without a chosen password.
pub fn bootstrap(moto: &Moto, args: &[&str]) -> Command {
    let mut c = Command::new(bin("fossa-bootstrap"));
    c.args(args)
        .arg("--endpoint-url")
        .arg(&moto.url)
        .envs(moto.env())
        .env_remove("GATEWAY_HTTP_PASSWORD")
        // Outside the source tree, so a launch without --agent-binary never builds one.
        .current_dir(std::env::temp_dir());
    c
}

/// `launch --no-wait` of `stack` with `--allow-cidr` [`ALLOW`].
pub fn launch(moto: &Moto, stack: &str, extra: &[&str]) -> Command {
    launch_allowing(moto, stack, Some(ALLOW), extra)
}

/// `launch --no-wait` with `--allow-cidr allow`, or none.
pub fn launch_allowing(moto: &Moto, stack: &str, allow: Option<&str>, extra: &[&str]) -> Command {
    let mut c = bootstrap(moto, &["launch", "--stack", stack, "--no-wait"]);
    if let Some(a) = allow {
        c.args(["--allow-cidr", a]);
    }
    c.arg("--agent-binary").arg(bin("fossa-agent")).args(extra);
    c
}

/// The gateway instance's user-data, as EC2 holds it.
pub async fn user_data(sdk: &aws_config::SdkConfig, stack: &str) -> String {
    let ec2 = aws_sdk_ec2::Client::new(sdk);
    let found = ec2
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:fossa:stack")
                .values(stack)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let id = found.reservations()[0].instances()[0]
        .instance_id()
        .unwrap()
        .to_owned();
    let attr = ec2
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let b64 = attr.user_data().and_then(|v| v.value()).unwrap_or_default();
    let text = String::from_utf8(aws_smithy_types::base64::decode(b64).unwrap()).unwrap();
    assert!(text.contains("fossa-agent"), "user-data: {text}");
    text
}
