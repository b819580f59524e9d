//! A launched stack for the agent's AWS duties: moto_server, `fossa-bootstrap
//! launch --no-wait` with a model directory, a real dockerd with Python and
//! RabbitMQ images made from Debian's packages (the worker image is built with
//! the real pip install of Fossa, and the broker duty checks RabbitMQ with a
//! real AMQP login), a registry with htpasswd auth standing in
//! for ECR (it takes the password of the emulator's ECR token), and
//! `fossa-agent run` processes pointed at all of them.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::docker::{Dockerd, Registry};
use crate::moto::{Moto, ACCOUNT, REGION};
use crate::process::Process;
use crate::{bin, free_port, Run, TempDir};

/// The parts of a launched stack.
pub struct Stack {
    /// The Fargate emulator in front of moto, when the stack has a gateway
    /// namespace (first, so it removes its tasks while dockerd runs).
    pub emulator: Option<crate::fargate::Emulator>,
    /// The endpoint the CLI and the agent use: the emulator's, else moto's.
    pub endpoint: String,
    /// The gateway namespace the agent runs in, if any.
    pub netns: Option<String>,
    _ui_forward: Option<crate::netns::Forward>,
    /// Stack name.
    pub name: String,
    /// The AWS API emulator.
    pub moto: Moto,
    /// SDK settings for it.
    pub sdk: aws_config::SdkConfig,
    /// The registry standing in for ECR.
    pub registry: Registry,
    /// The Docker daemon the agent builds with.
    pub docker: Dockerd,
    /// The password of the emulator's ECR token (the registry's password).
    pub ecr_password: String,
    /// Scratch directory: models, agent configs and logs, state.
    pub dir: TempDir,
    /// The model directory handed to `launch`.
    pub models: PathBuf,
    /// The port the agent's UI listens on (loopback).
    pub ui_port: u16,
    /// What the first `launch` printed.
    pub launched: Run,
    /// The broker duty's image: RabbitMQ from Debian's package.
    pub broker_image: String,
    /// With a gateway namespace, moto enforces IAM, and the agent signs with
    /// these: a user holding exactly the gateway role's documents, as
    /// `launch` made them (see `Moto::user_like_role`).
    pub agent_keys: Option<crate::moto::Keys>,
    /// The worker image's base: Python from Debian's packages.
    pub base_image: String,
}

impl Stack {
    /// Starts the parts and launches stack `name` with 2 workers and one model file.
    pub async fn launch(name: &str) -> Stack {
        Self::launch_in(name, None, None).await
    }

    /// As [`Stack::launch`]; with `gateway`, dockerd and the registry run in
    /// its namespace (and so does the agent, and the broker it starts), the
    /// Fargate emulator runs the service's tasks there, and the UI is
    /// forwarded to this namespace's loopback. Its builds cannot reach PyPI,
    /// so the base is [`crate::images::PYTHON_FOSSA`]. `models` replaces the
    /// one-file model directory.
    pub async fn launch_in(
        name: &str,
        gateway: Option<&crate::fargate::Gateway>,
        model_files: Option<&[(&str, &str)]>,
    ) -> Stack {
        // The whole path runs with IAM enforced: bootstrap and the harness as
        // an administrator, the agent as its role.
        let moto = match gateway {
            Some(_) => Moto::start_enforcing().await,
            None => Moto::start(),
        };
        let sdk = moto.sdk().await;
        let ecr_password = moto.ecr_password().await;
        let ns = gateway.map(|g| &g.gw);
        let registry = Registry::start_in(&ecr_password, ns);
        let docker = Dockerd::start_in(ns);
        let base_image = match gateway {
            Some(_) => crate::images::PYTHON_FOSSA.import(&docker),
            None => crate::images::PYTHON.import(&docker),
        };
        let broker_image = crate::images::RABBITMQ.import(&docker);
        let dir = TempDir::new("stack");
        let models = dir.0.join("models");
        std::fs::create_dir_all(&models).unwrap();
        let files = models_files(model_files);
        for (file, text) in files {
            std::fs::write(models.join(file), text).unwrap();
        }
        let ui_port = free_port();
        let emulator = gateway.map(|g| crate::fargate::Emulator::start(&moto, &docker, g, &dir.0));
        let mut stack = Stack {
            endpoint: emulator
                .as_ref()
                .map_or_else(|| moto.url.clone(), |e| e.url.clone()),
            emulator,
            netns: gateway.map(|g| g.gw.name.clone()),
            _ui_forward: gateway.map(|g| crate::netns::Forward::into_ns(&g.gw, ui_port)),
            name: name.to_owned(),
            moto,
            sdk,
            registry,
            docker,
            ecr_password,
            dir,
            models,
            ui_port,
            launched: Run {
                code: 0,
                stdout: String::new(),
                stderr: String::new(),
            },
            broker_image,
            base_image,
            agent_keys: None,
        };
        stack.launched = stack.relaunch();
        if gateway.is_some() {
            let role = fossa_contract::StackName::new(name).unwrap().gateway_role();
            let keys = stack
                .moto
                .user_like_role(&role, &format!("{role}-as-user"))
                .await;
            stack.agent_keys = Some(keys);
        }
        stack
    }

    /// Runs `fossa-bootstrap launch` again (after a model change, say).
    pub fn relaunch(&self) -> Run {
        self.rerun(&["--workers", "2"])
    }

    /// Runs `fossa-bootstrap launch` again with `args` besides the stack's
    /// own (so without `--workers` a re-run keeps the count).
    pub fn rerun(&self, args: &[&str]) -> Run {
        Run::of(self.launch_command(args).arg("--no-wait")).ok()
    }

    /// `fossa-bootstrap launch` of this stack with `args`, which follows the
    /// agent unless given `--no-wait`.
    pub fn launch_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("fossa-bootstrap"));
        c.args([
            "launch",
            "--stack",
            &self.name,
            "--allow-cidr",
            "198.51.100.1/32",
            "--endpoint-url",
            &self.endpoint,
        ])
        .args(args)
        .arg("--agent-binary")
        .arg(bin("fossa-agent"))
        .arg("--models")
        .arg(&self.models)
        .envs(self.moto.env());
        c
    }

    /// Writes an agent.toml for these parts running `duties` and returns its path.
    pub fn config(&self, duties: &[&str]) -> PathBuf {
        let path = self.dir.0.join(format!("agent-{}.toml", duties.join("-")));
        let duties: Vec<String> = duties.iter().map(|d| format!("\"{d}\"")).collect();
        std::fs::write(
            &path,
            format!(
                "stack = \"{}\"\nregion = \"{REGION}\"\nendpoint_url = \"{}\"\nstate_dir = \"{}\"\nlisten = \"127.0.0.1:{}\"\n\
                 registry = \"{}\"\nbase_image = \"{}\"\nbroker_image = \"{}\"\nbroker_address = \"{}\"\n{}\
                 duties = [{}]\n",
                self.name,
                self.endpoint,
                self.dir.0.join("state").display(),
                self.ui_port,
                self.registry.address,
                self.base_image,
                self.broker_image,
                if self.netns.is_some() { crate::fargate::GATEWAY_PRIVATE } else { "127.0.0.1" },
                // In a gateway namespace the agent's containers are
                // isolated as on the instance; a dockerd on this machine's
                // own network has no NAT duty to fence a bridge, so they run
                // on the host's network, as local mode's do.
                if self.netns.is_some() {
                    format!("egress_check = \"{}\"\n", crate::fargate::Gateway::egress_target())
                } else {
                    "container_network = \"host\"\n".to_owned()
                },
                duties.join(", ")
            ),
        )
        .unwrap();
        path
    }

    /// Starts `fossa-agent run` with `config` and extra environment, logging to `<dir>/<log>`.
    pub fn agent(&self, config: &std::path::Path, log: &str, env: &[(&str, &str)]) -> Agent {
        let log = self.dir.0.join(log);
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("fossa-agent"));
                c
            }
            None => Command::new(bin("fossa-agent")),
        };
        let keys = self.agent_keys.as_ref().unwrap_or(&self.moto.keys);
        cmd.args(["run", "--config"])
            .arg(config)
            .envs(keys.env())
            .env("DOCKER_HOST", &self.docker.host)
            .env("RUST_LOG", "info")
            .env(fossa_contract::aws::ACTIONS_LOG_ENV, self.actions_log())
            .envs(env.iter().copied());
        let stdout = log.with_extension("out");
        Agent(Process::spawn(&mut cmd, stdout, log))
    }

    /// Where every agent of this stack records the AWS operations it calls.
    pub fn actions_log(&self) -> PathBuf {
        self.dir.0.join("aws-actions.log")
    }

    /// What `fossa-bootstrap plan --output json` prints for this stack.
    pub fn plan(&self) -> serde_json::Value {
        let r = Run::of(
            Command::new(bin("fossa-bootstrap"))
                .args(["plan", "--output", "json", "--stack", &self.name])
                .args([
                    "--allow-cidr",
                    "198.51.100.1/32",
                    "--endpoint-url",
                    &self.moto.url,
                ])
                .arg("--models")
                .arg(&self.models)
                .envs(self.moto.env()),
        )
        .ok();
        serde_json::from_str(&r.stdout).expect("plan prints JSON")
    }

    /// Checks every AWS operation the agents of this stack called against the
    /// gateway role's policy as `plan` prints it (the emulator enforces no
    /// IAM), on each resource AWS evaluates it against; returns the IAM
    /// actions checked.
    pub fn assert_agent_actions_allowed(&self) -> Vec<String> {
        use fossa_bootstrap::plan::iam::{allows, iam_actions, Scope};
        let recorded = std::fs::read_to_string(self.actions_log()).unwrap_or_default();
        let plan = self.plan();
        let role = format!("fossa-{}-gateway/fossa", self.name);
        let policy = plan
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == "iam-role-policy" && r["name"] == role.as_str())
            .unwrap_or_else(|| panic!("plan has no {role}: {plan}"))["policy"]
            .clone();
        let stack = fossa_contract::StackName::new(&self.name).unwrap();
        let bucket = stack.bucket(ACCOUNT, REGION);
        let scope = Scope {
            stack: &stack,
            partition: "aws",
            region: REGION,
            account: ACCOUNT,
            bucket: &bucket,
        };
        let mut actions: Vec<String> = recorded.lines().flat_map(iam_actions).collect();
        actions.sort();
        actions.dedup();
        assert!(!actions.is_empty(), "the agent recorded no AWS call");
        let mut refused = Vec::new();
        for a in &actions {
            let resources = scope.agent_resources(a).unwrap_or_else(|| {
                panic!(
                    "the agent called {a}: add the resources it acts on to Scope::agent_resources"
                )
            });
            refused.extend(
                resources
                    .into_iter()
                    .filter(|r| !allows(&policy, a, r))
                    .map(|r| format!("{a} on {r}")),
            );
        }
        assert!(
            refused.is_empty(),
            "the gateway role's policy does not allow what the agent called: {refused:?}\n{policy:#}"
        );
        actions
    }

    /// Checks, at the resource level, that the task execution role as `plan`
    /// prints it allows what the ECS agent calls to start a worker of the
    /// task definition the agent registered: the registry token, pulling its
    /// image, reading each `secrets` entry, writing to its log group.
    /// (The emulator starts no tasks, so these calls are derived from the
    /// task definition, as ECS makes them.) Returns the pairs checked.
    pub async fn assert_execution_role_covers_workers(&self) -> Vec<(String, String)> {
        use fossa_bootstrap::plan::iam::{allows, EXECUTION_ROLE_ACTIONS};
        let plan = self.plan();
        let role = format!("fossa-{}-task-execution", self.name);
        let policy = plan
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == "iam-role-policy" && r["name"] == format!("{role}/fossa"))
            .unwrap_or_else(|| panic!("plan has no {role} policy: {plan}"))["policy"]
            .clone();
        let ecs = aws_sdk_ecs::Client::new(&self.sdk);
        let out = ecs
            .describe_task_definition()
            .task_definition(format!("fossa-{}-worker", self.name))
            .send()
            .await
            .unwrap();
        let td = out.task_definition().unwrap();
        assert!(
            td.execution_role_arn()
                .unwrap_or_default()
                .ends_with(&format!(":role/{role}")),
            "{td:?}"
        );
        let c = &td.container_definitions()[0];
        let image = c.image().unwrap();
        let repo = image
            .split_once('/')
            .map(|(_, r)| r.split(':').next().unwrap())
            .unwrap();
        let repo_arn = format!("arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{repo}");
        let mut pairs = vec![("ecr:GetAuthorizationToken".to_owned(), "*".to_owned())];
        for a in [
            "BatchCheckLayerAvailability",
            "GetDownloadUrlForLayer",
            "BatchGetImage",
        ] {
            pairs.push((format!("ecr:{a}"), repo_arn.clone()));
        }
        assert!(!c.secrets().is_empty(), "the broker URL is a secret");
        for secret in c.secrets() {
            let from = secret.value_from();
            let arn = if from.starts_with("arn:") {
                from.to_owned()
            } else {
                format!("arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{from}")
            };
            pairs.push(("ssm:GetParameters".to_owned(), arn));
        }
        let logs = c.log_configuration().unwrap().options().unwrap();
        let stream = format!(
            "arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{}:log-stream:{}/worker/0123456789abcdef",
            logs["awslogs-group"], logs["awslogs-stream-prefix"]
        );
        for a in ["CreateLogStream", "PutLogEvents"] {
            pairs.push((format!("logs:{a}"), stream.clone()));
        }
        let mut actions: Vec<&str> = pairs.iter().map(|(a, _)| a.as_str()).collect();
        actions.sort_unstable();
        actions.dedup();
        let mut listed = EXECUTION_ROLE_ACTIONS.to_vec();
        listed.sort_unstable();
        assert_eq!(actions, listed, "EXECUTION_ROLE_ACTIONS is what ECS calls");
        let refused: Vec<&(String, String)> = pairs
            .iter()
            .filter(|(a, r)| !allows(&policy, a, r))
            .collect();
        assert!(
            refused.is_empty(),
            "ECS could not start a worker: the task execution role does not allow {refused:?}:\n{policy:#}"
        );
        pairs
    }

    /// Image tags in the stack's repository on the registry.
    pub fn image_tags(&self) -> Vec<String> {
        self.registry.tags(&self.repository(), &self.ecr_password)
    }

    /// The stack's ECR repository name.
    pub fn repository(&self) -> String {
        format!("fossa-{}/worker", self.name)
    }
}

/// The model files of a stack: `given`, or one file with `SmallEtl`.
fn models_files<'a>(given: Option<&'a [(&'a str, &'a str)]>) -> Vec<(&'a str, &'a str)> {
    given.map_or_else(
        || {
            vec![(
                "etl.py",
                "import ayeaye\n\nclass SmallEtl(ayeaye.PartitionedModel):\n    pass\n",
            )]
        },
        <[_]>::to_vec,
    )
}

/// A running `fossa-agent run`: a [`Process`] (its log is stderr), killed
/// on drop if it still runs.
pub struct Agent(pub Process);

impl std::ops::Deref for Agent {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.0
    }
}

impl std::ops::DerefMut for Agent {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.0
    }
}

impl Agent {
    /// Waits until the log holds every needle; returns how long that took.
    pub fn wait_log(&self, needles: &[&str], within: Duration) -> Duration {
        self.0.wait_log_since(0, needles, within)
    }

    /// SIGTERM, waits for a clean exit and returns the whole log.
    pub fn stop(mut self) -> String {
        self.0.stop("TERM", Duration::from_secs(15));
        self.0.log()
    }
}
