//! A real `moto_server` on a free loopback port, and SDK configs pointing at it.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};

/// Region the tests use.
pub const REGION: &str = "eu-west-2";
/// The account id moto answers every call with.
pub const ACCOUNT: &str = "123456789012";

/// A running moto_server; killed on drop.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Moto {
    /// Starts moto_server from the test venv and waits until it answers.
    pub fn start() -> Moto {
        Self::start_in(None)
    }

    /// Starts moto_server inside `netns` (on its loopback), or here.
    pub fn start_in(netns: Option<&crate::netns::Netns>) -> Moto {
        let port = crate::free_port();
        let mut cmd = match netns {
            Some(ns) => ns.cmd(crate::venv_bin("moto_server")),
            None => Command::new(crate::venv_bin("moto_server")),
        };
        let child = cmd
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let url = format!("http://127.0.0.1:{port}");
        let moto = Moto { child, url };
        let up = || match netns {
            Some(ns) => ns
                .cmd("curl")
                .args(["-fsS", "-o", "/dev/null", &moto.url])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            None => std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        };
        crate::eventually_blocking(
            &format!("moto_server answering on port {port}"),
            Duration::from_secs(30),
            || crate::holds(up(), || "no answer"),
        );
        moto
    }

    /// Environment for a child process (bootstrap, agent) to reach this emulator.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CONFIG_FILE", "/dev/null".into()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
        ]
    }

    /// An SDK config for in-test clients.
    pub async fn sdk(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.url)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .load()
            .await
    }

    /// The stack config `fossa-bootstrap launch` wrote to SSM for `stack`.
    pub async fn stack_config(&self, stack: &str) -> fossa_contract::config::StackConfig {
        let name = fossa_contract::StackName::new(stack)
            .expect("a valid stack name")
            .ssm_parameter(fossa_contract::ssm::CONFIG);
        let p = aws_sdk_ssm::Client::new(&self.sdk().await)
            .get_parameter()
            .name(&name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        fossa_contract::config::StackConfig::parse(&name, p.parameter().unwrap().value().unwrap())
            .unwrap()
    }

    /// POSTs JSON to one of moto's control endpoints (`/moto-api/...`).
    pub fn control(&self, path: &str, body: &str) {
        let out = Command::new("curl")
            .args([
                "-fsS",
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "-d",
                body,
                &format!("{}{path}", self.url),
            ])
            .output()
            .expect("curl is installed");
        assert!(
            out.status.success(),
            "moto control {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
