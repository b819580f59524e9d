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
    /// Presigned GET URL of the agent binary.
    pub agent_url: &'a str,
    /// SHA-256 of the agent binary, hex.
    pub agent_sha256: &'a str,
}

/// User-data would exceed EC2's limit.
#[derive(Debug, thiserror::Error)]
#[error("user-data is {0} bytes, over EC2's 16 KiB limit")]
pub struct TooLarge(pub usize);

impl UserData<'_> {
    /// The script, checked against the size limit.
    pub fn render(&self) -> Result<String, TooLarge> {
        let out = TEMPLATE
            .replace("@STACK@", self.agent.stack.as_str())
            .replace("@AGENT_URL@", &self.agent_url.replace('\'', "%27"))
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
            agent_url: "https://b.s3.amazonaws.com/agent?X-Amz-Signature=abc",
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
            "X-Amz-Signature=abc",
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
    fn holds_no_secret() {
        let a = agent();
        let u = UserData {
            agent: &a,
            agent_url: "https://x/y",
            agent_sha256: "00",
        }
        .render()
        .unwrap();
        let lower = u.to_lowercase();
        for word in ["password", "secret_access", "amqp://", "guest:guest"] {
            assert!(!lower.contains(word), "user-data mentions {word}");
        }
    }
}
