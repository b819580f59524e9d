//! Renders the gateway instance's user-data from `user-data.sh` and the unit in `systemd/`.

use fossa_contract::config::AgentToml;

const TEMPLATE: &str = include_str!("user-data.sh");
/// The systemd unit the instance installs, as shipped in `systemd/`.
pub const UNIT: &str = include_str!("../../systemd/fossa-agent.service");
/// EC2's limit on user-data.
pub const MAX_USER_DATA: usize = 16 * 1024;

/// What goes into user-data.
#[derive(Debug, Clone)]
pub struct UserData<'a> {
    /// The agent's TOML file.
    pub agent: &'a AgentToml,
    /// The agent binary's object URL in the stack's bucket (no query: the
    /// instance signs its GET with its own role; see [`agent_object_url`]).
    pub agent_url: &'a str,
    /// The EC2 endpoint the instance attaches the lasting parts through
    /// (see [`ec2_url`]).
    pub ec2_url: &'a str,
    /// The instance profile, named when the instance has no credentials.
    pub profile: &'a str,
    /// The stack's account: the bucket's expected owner.
    pub account: &'a str,
    /// SHA-256 of the agent binary, hex.
    pub agent_sha256: &'a str,
    /// What the instance takes over at boot.
    pub lasting: Lasting<'a>,
}

/// The ids of what outlives the instance (`launch/lasting.rs`).
#[derive(Debug, Clone, Copy)]
pub struct Lasting<'a> {
    /// The network interface.
    pub interface: &'a str,
    /// The Elastic IP's allocation.
    pub allocation: &'a str,
    /// The data volume.
    pub volume: &'a str,
}

/// User-data would exceed EC2's limit.
#[derive(Debug, thiserror::Error)]
#[error("user-data is {0} bytes, over EC2's 16 KiB limit")]
pub struct TooLarge(pub usize);

/// The URL of `key` in `bucket`: path-style on an emulator's `endpoint`,
/// else S3's virtual-hosted style for the region's partition
/// (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/VirtualHosting.html>).
pub fn agent_object_url(bucket: &str, key: &str, region: &str, endpoint: Option<&str>) -> String {
    match endpoint {
        Some(e) => format!("{}/{bucket}/{key}", e.trim_end_matches('/')),
        None => {
            let suffix = if region.starts_with("cn-") {
                "amazonaws.com.cn"
            } else {
                "amazonaws.com"
            };
            format!("https://{bucket}.s3.{region}.{suffix}/{key}")
        }
    }
}

/// EC2's Query API endpoint: the emulator's, else the region's
/// (<https://docs.aws.amazon.com/general/latest/gr/ec2-service.html>).
pub fn ec2_url(region: &str, endpoint: Option<&str>) -> String {
    match endpoint {
        Some(e) => format!("{}/", e.trim_end_matches('/')),
        None if region.starts_with("cn-") => format!("https://ec2.{region}.amazonaws.com.cn/"),
        None => format!("https://ec2.{region}.amazonaws.com/"),
    }
}

impl UserData<'_> {
    /// The script, checked against the size limit.
    pub fn render(&self) -> Result<String, TooLarge> {
        let out = TEMPLATE
            .replace("@STACK@", self.agent.stack.as_str())
            .replace("@AGENT_OBJECT_URL@", &self.agent_url.replace('"', "%22"))
            .replace("@REGION@", &self.agent.region)
            .replace("@EC2_URL@", &self.ec2_url.replace('"', "%22"))
            .replace("@INTERFACE_ID@", self.lasting.interface)
            .replace("@ALLOCATION_ID@", self.lasting.allocation)
            .replace("@VOLUME_ID@", self.lasting.volume)
            .replace("@DATA_DEVICE@", fossa_contract::limits::DATA_DEVICE)
            .replace(
                "@INTERFACE_INDEX@",
                &fossa_contract::limits::LASTING_INTERFACE_INDEX.to_string(),
            )
            .replace(
                "@ATTACH_WAIT_SECS@",
                &fossa_contract::limits::ATTACH_WAIT_SECS.to_string(),
            )
            .replace("@STATE_DIR@", fossa_contract::config::DEFAULT_STATE_DIR)
            .replace("@PROFILE@", self.profile)
            .replace("@ACCOUNT@", self.account)
            .replace("@AGENT_SHA256@", self.agent_sha256)
            .replace("@AGENT_TOML@", self.agent.render().trim_end())
            .replace("@UNIT@", UNIT.trim_end());
        if out.len() > MAX_USER_DATA {
            return Err(TooLarge(out.len()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const LASTING: Lasting<'static> = Lasting {
        interface: "eni-0a",
        allocation: "eipalloc-0b",
        volume: "vol-0c",
    };

    fn agent() -> AgentToml {
        AgentToml::parse(Path::new("t"), "stack = \"dev\"\nregion = \"eu-west-2\"\n").unwrap()
    }

    #[test]
    fn renders_everything_under_the_limit() {
        let a = agent();
        let u = UserData {
            agent: &a,
            agent_url: &agent_object_url("b", "agent/fossa-agent", "eu-west-2", None),
            ec2_url: &ec2_url("eu-west-2", None),
            profile: "fossa-dev-gateway",
            account: "123456789012",
            agent_sha256: "ff00",
            lasting: LASTING,
        }
        .render()
        .unwrap();
        assert!(u.len() < MAX_USER_DATA, "{}", u.len());
        let left: Vec<&str> = u
            .split('@')
            .skip(1)
            .step_by(2)
            .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .collect();
        assert!(left.is_empty(), "placeholders left: {left:?}");
        for needle in [
            "ff00  $tmp",
            "stack = \"dev\"",
            "Type=notify",
            "url = \"https://b.s3.eu-west-2.amazonaws.com/agent/fossa-agent\"",
            "aws-sigv4 = \"aws:amz:eu-west-2:s3\"",
            "fossa-dev-gateway",
            "x-amz-expected-bucket-owner: 123456789012",
            "systemctl enable --now fossa-agent",
            "url = \"https://ec2.eu-west-2.amazonaws.com/\"",
            "NetworkInterfaceId=eni-0a",
            "AllocationId=eipalloc-0b",
            "VolumeId=vol-0c",
            "Device=/dev/xvdf",
        ] {
            assert!(u.contains(needle), "missing {needle}");
        }
        // The embedded TOML is what the agent parses.
        let toml = u
            .split("<<'FOSSA_TOML'\n")
            .nth(1)
            .unwrap()
            .split("\nFOSSA_TOML")
            .next()
            .unwrap();
        assert_eq!(AgentToml::parse(Path::new("t"), toml).unwrap(), a);
    }

    #[test]
    fn the_agent_object_url_follows_the_partition_and_the_endpoint() {
        assert_eq!(
            agent_object_url("b", "agent/fossa-agent", "cn-north-1", None),
            "https://b.s3.cn-north-1.amazonaws.com.cn/agent/fossa-agent"
        );
        assert_eq!(
            agent_object_url("b", "k", "eu-west-2", Some("http://127.0.0.1:5000/")),
            "http://127.0.0.1:5000/b/k"
        );
    }

    #[test]
    fn holds_no_secret() {
        let a = agent();
        let u = UserData {
            agent: &a,
            agent_url: "https://x/y",
            ec2_url: "https://e/",
            profile: "p",
            account: "1",
            agent_sha256: "00",
            lasting: LASTING,
        }
        .render()
        .unwrap();
        let lower = u.to_lowercase();
        for word in [
            "password",
            "secret_access",
            "amqp://",
            "guest:guest",
            "x-amz-signature",
            "x-amz-credential",
        ] {
            assert!(!lower.contains(word), "user-data mentions {word}");
        }
    }
}
