//! The stack's IAM documents as plain data: the three roles with their trust
//! and inline policies, each scoped to the stack's own resources, and a small
//! evaluator that tells whether a policy allows an action on a resource.
//!
//! Resource types and condition keys follow the IAM service reference (the
//! same database parliament lints with). The emulator enforces none of this,
//! so the tests lint these documents and check every action the agent calls
//! against them.

use fossa_contract::{ssm, StackName};
use serde_json::{json, Value};

pub use super::policy::{allows, allows_action};

/// Everything an ARN of the stack's resources is built from.
#[derive(Debug, Clone)]
pub struct Scope<'a> {
    /// The stack.
    pub stack: &'a StackName,
    /// `aws`, `aws-cn` or `aws-us-gov`.
    pub partition: &'a str,
    /// Region.
    pub region: &'a str,
    /// Account id.
    pub account: &'a str,
    /// Artifact bucket.
    pub bucket: &'a str,
}

/// The service principal EC2 instances assume roles through.
pub const EC2_SERVICE: &str = "ec2.amazonaws.com";
/// The service principal ECS tasks assume roles through.
pub const ECS_TASKS_SERVICE: &str = "ecs-tasks.amazonaws.com";

/// Managed policies earlier versions attached to the gateway role, which
/// `launch` now detaches: AmazonSSMManagedInstanceCore granted
/// `ssm:GetParameter*` on every parameter of the account.
pub fn retired_managed_policies(partition: &str) -> Vec<String> {
    vec![format!(
        "arn:{partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
    )]
}

/// One IAM role of the stack.
#[derive(Debug, Clone, PartialEq)]
pub struct RolePlan {
    /// Role name.
    pub name: String,
    /// What it is for, in a few words.
    pub purpose: &'static str,
    /// The service principal that assumes it.
    pub service: &'static str,
    /// Its trust (assume-role) policy.
    pub trust: Value,
    /// Its inline policy `fossa`, if it has one.
    pub inline: Option<Value>,
}

/// Name of the inline policy on each role.
pub const INLINE_POLICY_NAME: &str = "fossa";

/// The actions the ECS agent calls with the task execution role to start a
/// worker: pull the image, resolve the `secrets` entry, send the logs.
pub const EXECUTION_ROLE_ACTIONS: [&str; 7] = [
    "ecr:GetAuthorizationToken",
    "ecr:BatchCheckLayerAvailability",
    "ecr:GetDownloadUrlForLayer",
    "ecr:BatchGetImage",
    "ssm:GetParameters",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
];

impl Scope<'_> {
    fn arn(&self, service: &str, resource: &str) -> String {
        format!(
            "arn:{}:{service}:{}:{}:{resource}",
            self.partition, self.region, self.account
        )
    }

    /// ARN of IAM role `name`.
    pub fn role_arn(&self, name: &str) -> String {
        format!("arn:{}:iam::{}:role/{name}", self.partition, self.account)
    }

    /// ARN of the stack's ECR repository.
    pub fn repository_arn(&self) -> String {
        self.arn(
            "ecr",
            &format!("repository/{}", self.stack.ecr_repository()),
        )
    }

    /// ARN of the stack's ECS cluster.
    pub fn cluster_arn(&self) -> String {
        self.arn("ecs", &format!("cluster/{}", self.stack.cluster()))
    }

    /// ARN of the stack's SSM parameter `key`.
    pub fn parameter_arn(&self, key: &str) -> String {
        self.arn(
            "ssm",
            &format!("parameter{}", self.stack.ssm_parameter(key)),
        )
    }

    /// ARN of the artifact bucket.
    pub fn bucket_arn(&self) -> String {
        format!("arn:{}:s3:::{}", self.partition, self.bucket)
    }

    /// ARN pattern of the workers' log group and its streams.
    pub fn log_group_arn(&self) -> String {
        self.arn("logs", &format!("log-group:{}", self.stack.log_group()))
    }

    /// Trust policy letting `service` assume a role of this account.
    ///
    /// ECS tasks carry `aws:SourceAccount` and `aws:SourceArn`, so only this
    /// account's ECS can assume the role (the confused-deputy guard ECS
    /// documents). EC2 gets no such condition: an instance profile can only be
    /// attached by a principal of this account holding `iam:PassRole` on it,
    /// which already confines the role to the account, and EC2's delivery of
    /// instance credentials is not documented to carry those keys, so a
    /// condition there could leave the gateway without credentials.
    pub fn trust_policy(&self, service: &str) -> Value {
        let mut statement = json!({
            "Effect": "Allow",
            "Principal": {"Service": service},
            "Action": "sts:AssumeRole"
        });
        if service == ECS_TASKS_SERVICE {
            statement["Condition"] = json!({
                "StringEquals": {"aws:SourceAccount": self.account},
                "ArnLike": {"aws:SourceArn": self.arn("ecs", "*")}
            });
        }
        json!({"Version": "2012-10-17", "Statement": [statement]})
    }

    /// The three roles of the stack, in the order `launch` makes them.
    pub fn roles(&self) -> Vec<RolePlan> {
        let s = self.stack;
        vec![
            RolePlan {
                name: s.gateway_role(),
                purpose: "the gateway instance (agent and Session Manager)",
                service: EC2_SERVICE,
                trust: self.trust_policy(EC2_SERVICE),
                inline: Some(self.gateway_policy()),
            },
            RolePlan {
                name: s.execution_role(),
                purpose: "ECS starting a worker (pull, secret, logs)",
                service: ECS_TASKS_SERVICE,
                trust: self.trust_policy(ECS_TASKS_SERVICE),
                inline: Some(self.execution_policy()),
            },
            RolePlan {
                name: s.task_role(),
                purpose: "the workers' own code (no permissions)",
                service: ECS_TASKS_SERVICE,
                trust: self.trust_policy(ECS_TASKS_SERVICE),
                inline: None,
            },
        ]
    }

    /// The gateway role's inline policy: only the stack's own resources, and
    /// `*` only for actions that take no resource (or, for ListTasks, a
    /// condition on the cluster).
    pub fn gateway_policy(&self) -> Value {
        let s = self.stack;
        let cluster = self.cluster_arn();
        json!({
            "Version": "2012-10-17",
            "Statement": [
                {"Sid": "EcrToken", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
                {"Sid": "EcrStackRepository", "Effect": "Allow", "Action": [
                    "ecr:CreateRepository", "ecr:DescribeRepositories", "ecr:DescribeImages",
                    "ecr:ListImages", "ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload",
                    "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage",
                    "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:PutLifecyclePolicy",
                    "ecr:GetLifecyclePolicy", "ecr:TagResource"
                ], "Resource": self.repository_arn()},
                {"Sid": "EcsStackCluster", "Effect": "Allow", "Action": [
                    "ecs:CreateCluster", "ecs:DescribeClusters", "ecs:PutClusterCapacityProviders",
                    "ecs:TagResource"
                ], "Resource": cluster},
                {"Sid": "EcsStackService", "Effect": "Allow", "Action": [
                    "ecs:CreateService", "ecs:UpdateService", "ecs:DescribeServices", "ecs:TagResource"
                ], "Resource": self.arn("ecs", &format!("service/{}/*", s.cluster()))},
                {"Sid": "EcsListStackTasks", "Effect": "Allow", "Action": "ecs:ListTasks",
                 "Resource": "*", "Condition": {"ArnEquals": {"ecs:cluster": cluster}}},
                {"Sid": "EcsStackTasks", "Effect": "Allow", "Action": [
                    "ecs:DescribeTasks", "ecs:UpdateTaskProtection"
                 ],
                 "Resource": self.arn("ecs", &format!("task/{}/*", s.cluster()))},
                {"Sid": "EcsStackTaskDefinitions", "Effect": "Allow", "Action": [
                    "ecs:RegisterTaskDefinition", "ecs:TagResource"
                ], "Resource": self.arn("ecs", &format!("task-definition/{}:*", s.task_family()))},
                // The only grant AWS takes for these two: the Service
                // Authorization Reference lists no resource type for
                // DescribeTaskDefinition or ListTaskDefinitions
                // (docs.aws.amazon.com/service-authorization/latest/reference/
                // list_amazonelasticcontainerservice.html), so "*" it is.
                // Definitions hold no secrets here: the broker URL is an
                // SSM `secrets` reference, never a value.
                {"Sid": "EcsReadTaskDefinitions", "Effect": "Allow", "Action": [
                    "ecs:DescribeTaskDefinition", "ecs:ListTaskDefinitions"
                ], "Resource": "*"},
                {"Sid": "PassStackTaskRoles", "Effect": "Allow", "Action": "iam:PassRole",
                 "Resource": [self.role_arn(&s.execution_role()), self.role_arn(&s.task_role())],
                 "Condition": {"StringEquals": {"iam:PassedToService": ECS_TASKS_SERVICE}}},
                {"Sid": "ReadStackParameters", "Effect": "Allow", "Action": [
                    "ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"
                ], "Resource": [
                    self.arn("ssm", &format!("parameter{}", s.ssm_path().trim_end_matches('/'))),
                    self.arn("ssm", &format!("parameter{}*", s.ssm_path()))
                ]},
                {"Sid": "WriteAgentParameters", "Effect": "Allow", "Action": [
                    "ssm:PutParameter", "ssm:AddTagsToResource"
                ], "Resource": ssm::AGENT_WRITES.iter().map(|k| self.parameter_arn(k)).collect::<Vec<_>>()},
                {"Sid": "ReadArtifacts", "Effect": "Allow", "Action": "s3:GetObject",
                 "Resource": format!("{}/*", self.bucket_arn())},
                {"Sid": "ListArtifacts", "Effect": "Allow", "Action": "s3:ListBucket",
                 "Resource": self.bucket_arn()},
                {"Sid": "AgentLease", "Effect": "Allow", "Action": "s3:PutObject",
                 "Resource": format!("{}/{}", self.bucket_arn(), fossa_contract::names::LEASE_OBJECT_KEY)},
                {"Sid": "WorkerLogGroup", "Effect": "Allow", "Action": [
                    "logs:CreateLogGroup", "logs:PutRetentionPolicy", "logs:TagResource"
                ], "Resource": [self.log_group_arn(), format!("{}:*", self.log_group_arn())]},
                {"Sid": "FindLogGroups", "Effect": "Allow", "Action": "logs:DescribeLogGroups",
                 "Resource": "*"},
                {"Sid": "ReadWorkerLogs", "Effect": "Allow", "Action": [
                    "logs:GetLogEvents", "logs:FilterLogEvents"
                ], "Resource": [self.log_group_arn(), format!("{}:log-stream:*", self.log_group_arn())]},
                // User-data's take-over at boot (`fossa:attach`): a
                // replacement instance attaches what its predecessor held.
                // Only the stack's tagged instance, interface, volume and
                // address.
                {"Sid": "TakeOverLastingParts", "Effect": "Allow", "Action": [
                    "ec2:AttachNetworkInterface", "ec2:AttachVolume", "ec2:AssociateAddress",
                    "ec2:ModifyNetworkInterfaceAttribute"
                ], "Resource": [
                    self.arn("ec2", "instance/*"), self.arn("ec2", "network-interface/*"),
                    self.arn("ec2", "volume/*"), self.arn("ec2", "elastic-ip/*")
                ], "Condition": {"StringEquals": {
                    format!("aws:ResourceTag/{}", fossa_contract::tags::STACK): s.as_str()
                }}},
                {"Sid": "SessionManager", "Effect": "Allow", "Action": [
                    "ssm:UpdateInstanceInformation", "ssmmessages:CreateControlChannel",
                    "ssmmessages:CreateDataChannel", "ssmmessages:OpenControlChannel",
                    "ssmmessages:OpenDataChannel"
                ], "Resource": "*"}
            ]
        })
    }

    /// The task execution role's inline policy: pull the stack's image, read
    /// the broker secret, write the workers' logs.
    pub fn execution_policy(&self) -> Value {
        json!({
            "Version": "2012-10-17",
            "Statement": [
                {"Sid": "EcrToken", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
                {"Sid": "PullWorkerImage", "Effect": "Allow", "Action": [
                    "ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"
                ], "Resource": self.repository_arn()},
                {"Sid": "BrokerSecret", "Effect": "Allow", "Action": ["ssm:GetParameters", "ssm:GetParameter"],
                 "Resource": self.parameter_arn(ssm::BROKER_URL)},
                {"Sid": "WorkerLogs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                 "Resource": format!("{}:*", self.log_group_arn())}
            ]
        })
    }
}

/// The IAM actions one SDK operation needs, from the `Service:Operation`
/// the SDK names it by (as [`fossa_contract::aws::ACTIONS_LOG_ENV`] records
/// it). Most map one to one; S3's HEAD and list calls take other names, and
/// the agent's create calls carry tags, which needs the tagging action too.
pub fn iam_actions(recorded: &str) -> Vec<String> {
    let (service, op) = recorded.split_once(':').unwrap_or(("", recorded));
    let prefix = match service {
        "CloudWatch Logs" => "logs".to_owned(),
        other => other.to_ascii_lowercase(),
    };
    let op = match (prefix.as_str(), op) {
        ("s3", "HeadObject") => "GetObject",
        ("s3", "HeadBucket" | "ListObjectsV2" | "ListObjects") => "ListBucket",
        ("s3", "ListObjectVersions") => "ListBucketVersions",
        ("s3", "DeleteObjects") => "DeleteObject",
        ("s3", "GetPublicAccessBlock") => "GetBucketPublicAccessBlock",
        ("s3", "PutPublicAccessBlock") => "PutBucketPublicAccessBlock",
        (_, other) => other,
    };
    let mut out = vec![format!("{prefix}:{op}")];
    let tagging = match (prefix.as_str(), op) {
        ("ecs", "RegisterTaskDefinition" | "CreateService" | "CreateCluster") => {
            Some("ecs:TagResource")
        }
        ("ecr", "CreateRepository") => Some("ecr:TagResource"),
        ("logs", "CreateLogGroup") => Some("logs:TagResource"),
        ("ssm", "PutParameter") => Some("ssm:AddTagsToResource"),
        _ => None,
    };
    out.extend(tagging.map(str::to_owned));
    // A task definition names the task roles: ECS checks PassRole on them.
    if (prefix.as_str(), op) == ("ecs", "RegisterTaskDefinition") {
        out.push("iam:PassRole".to_owned());
    }
    out
}

impl Scope<'_> {
    /// The resources AWS evaluates `action` against when the agent calls it
    /// for this stack (`*` where the action takes none), or `None` for an
    /// action the agent is not known to call: the recorded-calls test then
    /// asks for it to be added here.
    pub fn agent_resources(&self, action: &str) -> Option<Vec<String>> {
        let s = self.stack;
        let one = |r: String| Some(vec![r]);
        let task_definition = self.arn("ecs", &format!("task-definition/{}:1", s.task_family()));
        let service = self.arn("ecs", &format!("service/{}/{}", s.cluster(), s.service()));
        let (service_name, _) = action.split_once(':')?;
        match (service_name, action) {
            (_, "ecr:GetAuthorizationToken" | "logs:DescribeLogGroups") => one("*".into()),
            (_, "ecs:DescribeTaskDefinition" | "ecs:ListTaskDefinitions" | "ecs:ListTasks") => {
                one("*".into())
            }
            ("ecr", _) => one(self.repository_arn()),
            (
                _,
                "ecs:CreateCluster" | "ecs:DescribeClusters" | "ecs:PutClusterCapacityProviders",
            ) => one(self.cluster_arn()),
            (_, "ecs:CreateService" | "ecs:UpdateService" | "ecs:DescribeServices") => one(service),
            (_, "ecs:RegisterTaskDefinition") => one(task_definition),
            (_, "ecs:TagResource") => Some(vec![self.cluster_arn(), service, task_definition]),
            (_, "ecs:DescribeTasks" | "ecs:UpdateTaskProtection") => {
                one(self.arn("ecs", &format!("task/{}/0123456789abcdef", s.cluster())))
            }
            (_, "iam:PassRole") => Some(vec![
                self.role_arn(&s.execution_role()),
                self.role_arn(&s.task_role()),
            ]),
            (_, "logs:GetLogEvents") => one(format!(
                "{}:log-stream:{}",
                self.log_group_arn(),
                fossa_contract::names::worker_log_stream("0123456789abcdef")
            )),
            ("logs", _) => one(self.log_group_arn()),
            // The models tarball, and the agent binary the upgrade duty fetches.
            (_, "s3:GetObject") => Some(
                [
                    fossa_contract::names::MODELS_OBJECT_KEY,
                    fossa_contract::names::AGENT_OBJECT_KEY,
                ]
                .iter()
                .map(|k| format!("{}/{k}", self.bucket_arn()))
                .collect(),
            ),
            (_, "s3:ListBucket") => one(self.bucket_arn()),
            // The lease, the one object the agent writes.
            (_, "s3:PutObject") => one(format!(
                "{}/{}",
                self.bucket_arn(),
                fossa_contract::names::LEASE_OBJECT_KEY
            )),
            (_, "ssm:GetParameter" | "ssm:GetParameters") => {
                Some(ssm::ALL.iter().map(|k| self.parameter_arn(k)).collect())
            }
            (_, "ssm:GetParametersByPath") => one(self.arn(
                "ssm",
                &format!("parameter{}", s.ssm_path().trim_end_matches('/')),
            )),
            (_, "ssm:PutParameter" | "ssm:AddTagsToResource") => Some(
                ssm::AGENT_WRITES
                    .iter()
                    .map(|k| self.parameter_arn(k))
                    .collect(),
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(stack: &StackName) -> Scope<'_> {
        Scope {
            stack,
            partition: "aws",
            region: "eu-west-2",
            account: "123456789012",
            bucket: "b",
        }
    }

    #[test]
    fn policies_are_scoped_to_the_stack() {
        let stack = StackName::new("dev").unwrap();
        let scope = scope(&stack);
        let p = scope.gateway_policy().to_string();
        assert!(p.contains("arn:aws:ecr:eu-west-2:123456789012:repository/fossa-dev/worker"));
        assert!(p.contains("parameter/fossa/dev/*"));
        assert!(!p.contains("ecr:*") && !p.contains("ecs:*") && !p.contains("\"iam:*"));
        let policy = scope.gateway_policy();
        let pass = &policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Sid"] == "PassStackTaskRoles")
            .unwrap()["Resource"];
        assert_eq!(pass.as_array().unwrap().len(), 2);
        let e = scope.execution_policy().to_string();
        assert!(e.contains("parameter/fossa/dev/broker-url"));
    }

    #[test]
    fn the_two_grants_aws_would_refuse_are_fixed() {
        let stack = StackName::new("dev").unwrap();
        let s = scope(&stack);
        let p = s.gateway_policy();
        // DescribeLogGroups takes no resource: AWS evaluates it against `*`.
        assert!(allows(&p, "logs:DescribeLogGroups", "*"));
        // Registering a tagged task definition needs TagResource on it.
        let td = "arn:aws:ecs:eu-west-2:123456789012:task-definition/fossa-dev-worker:7";
        assert!(allows(&p, "ecs:RegisterTaskDefinition", td));
        assert!(allows(&p, "ecs:TagResource", td));
        // ... and only for the stack's own family.
        let other = "arn:aws:ecs:eu-west-2:123456789012:task-definition/fossa-prod-worker:1";
        assert!(!allows(&p, "ecs:RegisterTaskDefinition", other));
    }

    #[test]
    fn the_agent_writes_only_its_own_two_parameters_and_reads_no_other_stack() {
        let stack = StackName::new("dev").unwrap();
        let s = scope(&stack);
        let p = s.gateway_policy();
        for key in [ssm::BROKER_URL, ssm::TLS_FINGERPRINT] {
            assert!(
                allows(&p, "ssm:PutParameter", &s.parameter_arn(key)),
                "{key}"
            );
        }
        for key in [ssm::UI_PASSWORD, ssm::CONFIG, ssm::AGENT_SHA256] {
            assert!(
                !allows(&p, "ssm:PutParameter", &s.parameter_arn(key)),
                "{key}"
            );
            assert!(
                allows(&p, "ssm:GetParameter", &s.parameter_arn(key)),
                "{key}"
            );
        }
        let prod = StackName::new("prod").unwrap();
        let other = scope(&prod).parameter_arn(ssm::UI_PASSWORD);
        assert!(!allows(&p, "ssm:GetParameter", &other));
        assert!(!allows(&p, "ssm:GetParameters", "*"));
        // Session Manager without the managed policy's ssm:GetParameter* on *.
        assert!(allows_action(&p, "ssmmessages:OpenDataChannel"));
        assert!(allows_action(&p, "ssm:UpdateInstanceInformation"));
    }

    #[test]
    fn ecs_trust_is_bound_to_the_account() {
        let stack = StackName::new("dev").unwrap();
        let roles = scope(&stack).roles();
        assert_eq!(roles.len(), 3);
        for r in roles.iter().filter(|r| r.service == ECS_TASKS_SERVICE) {
            assert_eq!(
                r.trust["Statement"][0]["Condition"]["StringEquals"]["aws:SourceAccount"],
                "123456789012",
                "{}",
                r.name
            );
        }
        assert!(
            roles[2].inline.is_none(),
            "the task role has no permissions"
        );
    }

    #[test]
    fn the_execution_role_allows_what_ecs_calls_for_a_worker() {
        let stack = StackName::new("dev").unwrap();
        let s = scope(&stack);
        let p = s.execution_policy();
        for a in EXECUTION_ROLE_ACTIONS {
            assert!(allows_action(&p, a), "{a}");
        }
        assert!(allows(
            &p,
            "ssm:GetParameters",
            &s.parameter_arn(ssm::BROKER_URL)
        ));
        assert!(!allows(
            &p,
            "ssm:GetParameters",
            &s.parameter_arn(ssm::UI_PASSWORD)
        ));
        let stream = format!("{}:log-stream:worker/fossa/abc", s.log_group_arn());
        assert!(allows(&p, "logs:PutLogEvents", &stream));
    }

    #[test]
    fn the_resource_level_check_catches_the_two_grants_aws_refused() {
        let stack = StackName::new("dev").unwrap();
        let s = scope(&stack);
        // The two statements as they were before the fix.
        let old = json!({"Statement": [
            {"Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:DescribeLogGroups"],
             "Resource": s.arn("logs", "log-group:/fossa/dev/*")},
            {"Effect": "Allow", "Action": ["ecs:CreateCluster", "ecs:TagResource"], "Resource": s.cluster_arn()},
            {"Effect": "Allow", "Action": "ecs:RegisterTaskDefinition", "Resource": "*"}
        ]});
        let refused = |policy: &Value, action: &str| {
            s.agent_resources(action)
                .unwrap()
                .iter()
                .any(|r| !allows(policy, action, r))
        };
        assert!(refused(&old, "logs:DescribeLogGroups"));
        assert!(refused(&old, "ecs:TagResource"));
        let new = s.gateway_policy();
        for a in [
            "logs:DescribeLogGroups",
            "ecs:TagResource",
            "ecs:RegisterTaskDefinition",
            "iam:PassRole",
        ] {
            assert!(!refused(&new, a), "{a}");
        }
        assert!(s.agent_resources("ec2:RunInstances").is_none());
    }

    #[test]
    fn sdk_operations_map_to_iam_actions() {
        assert_eq!(iam_actions("ECS:ListTasks"), ["ecs:ListTasks"]);
        assert_eq!(
            iam_actions("CloudWatch Logs:DescribeLogGroups"),
            ["logs:DescribeLogGroups"]
        );
        assert_eq!(iam_actions("S3:HeadObject"), ["s3:GetObject"]);
        assert_eq!(
            iam_actions("ECS:RegisterTaskDefinition"),
            [
                "ecs:RegisterTaskDefinition",
                "ecs:TagResource",
                "iam:PassRole"
            ]
        );
    }
}
