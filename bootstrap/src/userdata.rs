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
    /// The instance profile, named when the instance has no credentials.
    pub profile: &'a str,
    /// The stack's account: the bucket's expected owner.
    pub account: &'a str,
    /// SHA-256 of the agent binary, hex.
    pub agent_sha256: &'a str,
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

impl UserData<'_> {
    /// The script, checked against the size limit.
    pub fn render(&self) -> Result<String, TooLarge> {
        let out = TEMPLATE
            .replace("@STACK@", self.agent.stack.as_str())
            .replace("@AGENT_OBJECT_URL@", &self.agent_url.replace('"', "%22"))
            .replace("@REGION@", &self.agent.region)
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

    fn agent() -> AgentToml {
        AgentToml::parse(Path::new("t"), "stack = \"dev\"\nregion = \"eu-west-2\"\n").unwrap()
    }

    #[test]
    fn renders_everything_under_the_limit() {
        let a = agent();
        let u = UserData {
            agent: &a,
            agent_url: &agent_object_url("b", "agent/fossa-agent", "eu-west-2", None),
            profile: "fossa-dev-gateway",
            account: "123456789012",
            agent_sha256: "ff00",
        }
        .render()
        .unwrap();
        assert!(u.len() < MAX_USER_DATA, "{}", u.len());
        assert!(!u.contains('@'.to_string().as_str()) || !u.contains("@STACK@"));
        for needle in [
            "ff00  $tmp",
            "stack = \"dev\"",
            "Type=notify",
            "url = \"https://b.s3.eu-west-2.amazonaws.com/agent/fossa-agent\"",
            "aws-sigv4 = \"aws:amz:eu-west-2:s3\"",
            "fossa-dev-gateway",
            "x-amz-expected-bucket-owner: 123456789012",
            "systemctl enable --now fossa-agent",
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
            profile: "p",
            account: "1",
            agent_sha256: "00",
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
