//! A real `moto_server` on a free loopback port, and SDK configs pointing at it.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};

/// Region the tests use.
pub const REGION: &str = "eu-west-2";
/// The account id moto answers every call with.
pub const ACCOUNT: &str = "123456789012";

/// An access key pair moto knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// The access key id.
    pub id: String,
    /// Its secret.
    pub secret: String,
}

impl Keys {
    /// The keys a moto that enforces no IAM takes (any would do).
    fn anyone() -> Keys {
        Keys {
            id: "test".into(),
            secret: "test".into(),
        }
    }

    /// Environment for a child process signing with these keys.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
            ("AWS_REGION", REGION.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CONFIG_FILE", "/dev/null".into()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
        ]
    }
}

/// The actions moto lets through unsigned before it enforces IAM: the three
/// that make the administrator (CreateUser, PutUserPolicy, CreateAccessKey).
const UNCHECKED_ACTIONS: &str = "3";
/// The administrator's user name in an enforcing moto.
const ADMIN: &str = "fossa-test-admin";

/// A running moto_server; killed on drop.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The keys [`Moto::env`] and [`Moto::sdk`] sign with: an administrator's
    /// when moto enforces IAM.
    pub keys: Keys,
}

impl Moto {
    /// Starts moto_server from the test venv and waits until it answers.
    pub fn start() -> Moto {
        Self::start_in(None)
    }

    /// Starts moto_server inside `netns` (on its loopback), or here.
    pub fn start_in(netns: Option<&crate::netns::Netns>) -> Moto {
        Self::spawn(netns, false)
    }

    /// Starts a moto_server that evaluates IAM on every signed call (after
    /// the three that make its administrator, whose keys [`Moto::env`] and
    /// [`Moto::sdk`] then carry). Its evaluation is basic: actions, and
    /// resources only for S3 and IAM roles (every other call is checked
    /// against `*`), no conditions; so `plan::iam`'s Scope check and
    /// parliament keep checking resources.
    pub async fn start_enforcing() -> Moto {
        let mut moto = Self::spawn(None, true);
        let iam = aws_sdk_iam::Client::new(&moto.sdk().await);
        moto.keys = create_user(&iam, ADMIN, &[("all", ALLOW_ALL.to_owned())]).await;
        moto
    }

    /// The documents of `role` (its inline policies and the managed
    /// policies attached to it) as moto can evaluate them (see [`for_moto`]).
    async fn role_documents(&self, role: &str) -> Vec<(String, String)> {
        let iam = aws_sdk_iam::Client::new(&self.sdk().await);
        let mut documents = Vec::new();
        let inline = iam
            .list_role_policies()
            .role_name(role)
            .send()
            .await
            .unwrap();
        for name in inline.policy_names() {
            let p = iam
                .get_role_policy()
                .role_name(role)
                .policy_name(name)
                .send()
                .await
                .unwrap();
            documents.push((name.clone(), url_decoded(p.policy_document())));
        }
        let attached = iam
            .list_attached_role_policies()
            .role_name(role)
            .send()
            .await
            .unwrap();
        for a in attached.attached_policies() {
            let arn = a.policy_arn().unwrap();
            let p = iam.get_policy().policy_arn(arn).send().await.unwrap();
            let version = p.policy().unwrap().default_version_id().unwrap();
            let v = iam
                .get_policy_version()
                .policy_arn(arn)
                .version_id(version)
                .send()
                .await
                .unwrap();
            let doc = v.policy_version().unwrap().document().unwrap();
            documents.push((a.policy_name().unwrap().to_owned(), url_decoded(doc)));
        }
        assert!(!documents.is_empty(), "role {role} has no policy");
        documents
            .into_iter()
            .map(|(n, d)| (n, for_moto(&d)))
            .collect()
    }

    /// A user holding the documents of `role` (see [`Moto::role_documents`]).
    /// Its keys act as the role would.
    pub async fn user_like_role(&self, role: &str, user: &str) -> Keys {
        let iam = aws_sdk_iam::Client::new(&self.sdk().await);
        let documents = self.role_documents(role).await;
        let documents: Vec<(&str, String)> = documents
            .iter()
            .map(|(n, d)| (n.as_str(), d.clone()))
            .collect();
        create_user(&iam, user, &documents).await
    }

    /// Temporary credentials (keys and session token, as an instance's
    /// metadata service hands them out) of a session of a role `copy` that
    /// holds the documents of `role` as moto can evaluate them.
    pub async fn session_like_role(&self, role: &str, copy: &str) -> (Keys, String) {
        let sdk = self.sdk().await;
        let iam = aws_sdk_iam::Client::new(&sdk);
        let documents = self.role_documents(role).await;
        let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}"#;
        let made = iam
            .create_role()
            .role_name(copy)
            .assume_role_policy_document(trust)
            .send()
            .await
            .unwrap();
        for (name, document) in &documents {
            iam.put_role_policy()
                .role_name(copy)
                .policy_name(name)
                .policy_document(document)
                .send()
                .await
                .unwrap();
        }
        let arn = made.role().unwrap().arn().to_owned();
        let sts = aws_sdk_sts::Client::new(&sdk);
        let out = sts
            .assume_role()
            .role_arn(arn)
            .role_session_name("i-instance")
            .send()
            .await
            .unwrap();
        let c = out.credentials().unwrap();
        (
            Keys {
                id: c.access_key_id().to_owned(),
                secret: c.secret_access_key().to_owned(),
            },
            c.session_token().to_owned(),
        )
    }

    fn spawn(netns: Option<&crate::netns::Netns>, enforce: bool) -> Moto {
        let port = crate::free_port();
        // moto_server through our wrapper, which checks signatures over the
        // bytes signed and refuses what S3 refuses and moto does not (see
        // its docstring).
        let mut cmd = match netns {
            Some(ns) => ns.cmd(crate::venv_bin("python")),
            None => Command::new(crate::venv_bin("python")),
        };
        cmd.arg(crate::repo_root().join("tests/support/moto_server.py"));
        if enforce {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", UNCHECKED_ACTIONS);
        }
        let child = cmd
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let url = format!("http://127.0.0.1:{port}");
        let moto = Moto {
            child,
            url,
            keys: Keys::anyone(),
        };
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

    /// Whether it evaluates IAM on signed calls.
    pub fn enforces(&self) -> bool {
        self.keys != Keys::anyone()
    }

    /// Environment for a child process (bootstrap, agent) to reach this emulator.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.keys.env()
    }

    /// An SDK config for in-test clients.
    pub async fn sdk(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.url)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                &self.keys.id,
                &self.keys.secret,
                None,
                None,
                "test",
            ))
            .load()
            .await
    }

    /// The password of moto's ECR token (a registry standing in for ECR
    /// takes it).
    pub async fn ecr_password(&self) -> String {
        let token = aws_sdk_ecr::Client::new(&self.sdk().await)
            .get_authorization_token()
            .send()
            .await
            .unwrap();
        let token = aws_smithy_types::base64::decode(
            token.authorization_data()[0].authorization_token().unwrap(),
        )
        .unwrap();
        let token = String::from_utf8(token).unwrap();
        token.split_once(':').unwrap().1.to_owned()
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

const ALLOW_ALL: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;

async fn create_user(iam: &aws_sdk_iam::Client, user: &str, policies: &[(&str, String)]) -> Keys {
    iam.create_user().user_name(user).send().await.unwrap();
    for (name, document) in policies {
        iam.put_user_policy()
            .user_name(user)
            .policy_name(*name)
            .policy_document(document)
            .send()
            .await
            .unwrap_or_else(|e| panic!("policy {name} for {user}: {e:?}\n{document}"));
    }
    let key = iam
        .create_access_key()
        .user_name(user)
        .send()
        .await
        .unwrap();
    let key = key.access_key().unwrap();
    Keys {
        id: key.access_key_id().to_owned(),
        secret: key.secret_access_key().to_owned(),
    }
}

/// IAM returns policy documents URL-encoded.
fn url_decoded(s: &str) -> String {
    if s.trim_start().starts_with('{') {
        return s.to_owned();
    }
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// A policy document as moto can evaluate it, no wider than AWS would
/// allow but for what moto cannot see: moto checks every call but S3's and
/// IAM roles' against the resource `*`, so a statement's resources become
/// `*` unless all its actions are S3's; and moto has no request context, so
/// a statement's conditions go (a condition it cannot evaluate refuses).
pub fn for_moto(document: &str) -> String {
    let mut doc: serde_json::Value = serde_json::from_str(document)
        .unwrap_or_else(|e| panic!("a policy document: {e}\n{document}"));
    let statements = match &mut doc["Statement"] {
        serde_json::Value::Array(a) => a,
        one => {
            *one = serde_json::Value::Array(vec![one.take()]);
            one.as_array_mut().unwrap()
        }
    };
    for st in statements {
        let o = st.as_object_mut().unwrap();
        o.remove("Condition");
        let actions: Vec<&str> = match &o["Action"] {
            serde_json::Value::String(a) => vec![a.as_str()],
            serde_json::Value::Array(a) => a.iter().filter_map(|v| v.as_str()).collect(),
            _ => Vec::new(),
        };
        if !actions.iter().all(|a| a.starts_with("s3:")) {
            o.insert("Resource".into(), "*".into());
        }
    }
    doc.to_string()
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_lose_conditions_and_resources_but_s3_ones() {
        let d = r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":["ecs:UpdateService"],"Resource":"arn:aws:ecs:r:1:service/c/s","Condition":{"StringEquals":{"aws:ResourceTag/x":"y"}}},
            {"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}"#;
        let v: serde_json::Value = serde_json::from_str(&for_moto(d)).unwrap();
        assert_eq!(v["Statement"][0]["Resource"], "*");
        assert!(v["Statement"][0].get("Condition").is_none());
        assert_eq!(v["Statement"][1]["Resource"], "arn:aws:s3:::b/*");
        assert_eq!(url_decoded("%7B%22a%22%3A1%7D"), r#"{"a":1}"#);
    }
}
