//! The desired state of a stack as plain data: subnet layout, security group
//! rules, IAM policies and the instance's architecture. `launch` applies it;
//! unit tests cover it without AWS.

use std::fmt;
use std::net::Ipv4Addr;

use fossa_contract::names::{BROKER_PORT, FOSSA_PORT};
use fossa_contract::{ssm, StackName};
use ipnet::Ipv4Net;
use serde_json::{json, Value};

/// CPU architecture of the gateway instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Intel/AMD.
    X86_64,
    /// Graviton.
    Arm64,
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
        })
    }
}

impl Arch {
    /// The architecture of an EC2 instance type: Graviton families carry a `g`
    /// after the generation digit (t4g, m7g, c6gn, im4gn, x2gd), plus `a1`.
    pub fn of_instance_type(instance_type: &str) -> Arch {
        let family = instance_type.split('.').next().unwrap_or_default();
        let suffix = family.trim_start_matches(|c: char| c.is_ascii_alphabetic());
        let suffix = suffix.trim_start_matches(|c: char| c.is_ascii_digit());
        if family == "a1" || suffix.contains('g') {
            Arch::Arm64
        } else {
            Arch::X86_64
        }
    }

    /// The SSM public parameter holding the latest Amazon Linux 2023 AMI.
    pub fn al2023_parameter(self) -> String {
        format!("/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{self}")
    }
}

/// Subnets carved from the VPC CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetLayout {
    /// The gateway's public subnet (the VPC's 2nd /24).
    pub public: Ipv4Net,
    /// The workers' private subnets (3rd and 4th /24), one per AZ.
    pub private: [Ipv4Net; 2],
}

/// The VPC CIDR cannot hold the layout.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--vpc-cidr {0} is not usable: give a private /16 to /22 block such as 192.168.0.0/16 or 10.20.0.0/16")]
pub struct BadVpcCidr(pub Ipv4Net);

impl SubnetLayout {
    /// Public = the 2nd /24 of the VPC, private = the 3rd and 4th
    /// (192.168.1.0/24, 192.168.2.0/24, 192.168.3.0/24 for the default).
    pub fn for_vpc(vpc: Ipv4Net) -> Result<Self, BadVpcCidr> {
        let private_range = [
            Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 8).expect("constant"),
            Ipv4Net::new(Ipv4Addr::new(172, 16, 0, 0), 12).expect("constant"),
            Ipv4Net::new(Ipv4Addr::new(192, 168, 0, 0), 16).expect("constant"),
        ];
        if !(16..=22).contains(&vpc.prefix_len())
            || vpc.network() != vpc.addr()
            || !private_range.iter().any(|r| r.contains(&vpc))
        {
            return Err(BadVpcCidr(vpc));
        }
        let mut s = vpc.subnets(24).map_err(|_| BadVpcCidr(vpc))?.skip(1);
        let mut next = || s.next().ok_or(BadVpcCidr(vpc));
        Ok(Self {
            public: next()?,
            private: [next()?, next()?],
        })
    }
}

/// Where an ingress rule lets traffic in from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// An IPv4 CIDR block.
    Cidr(String),
    /// Another security group (by id).
    Group(String),
}

/// One ingress rule of a security group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct IngressRule {
    /// `tcp`, or `-1` for all.
    pub protocol: String,
    /// First port (-1 for all).
    pub from: i32,
    /// Last port (-1 for all).
    pub to: i32,
    /// Who may connect.
    pub source: Source,
    /// Why the rule exists.
    pub description: String,
}

/// UI port on the gateway.
pub const UI_PORT: i32 = 443;

/// Gateway SG: the UI from `allow`, everything from the private subnets (NAT),
/// and the broker from the task SG. No SSH: shell access is SSM Session Manager.
pub fn gateway_ingress(allow: Ipv4Net, layout: &SubnetLayout, task_sg: &str) -> Vec<IngressRule> {
    let mut rules = vec![IngressRule {
        protocol: "tcp".into(),
        from: UI_PORT,
        to: UI_PORT,
        source: Source::Cidr(allow.to_string()),
        description: "fossa web UI".into(),
    }];
    for p in layout.private {
        rules.push(IngressRule {
            protocol: "-1".into(),
            from: -1,
            to: -1,
            source: Source::Cidr(p.to_string()),
            description: "NAT for the private subnets".into(),
        });
    }
    rules.push(IngressRule {
        protocol: "tcp".into(),
        from: BROKER_PORT.into(),
        to: BROKER_PORT.into(),
        source: Source::Group(task_sg.to_owned()),
        description: "RabbitMQ from the workers".into(),
    });
    rules
}

/// Task SG: Fossa's port from the gateway only.
pub fn task_ingress(gateway_sg: &str) -> Vec<IngressRule> {
    vec![IngressRule {
        protocol: "tcp".into(),
        from: FOSSA_PORT.into(),
        to: FOSSA_PORT.into(),
        source: Source::Group(gateway_sg.to_owned()),
        description: "Fossa API from the gateway".into(),
    }]
}

/// The rules of `desired` that `existing` lacks (descriptions are not compared).
pub fn missing_rules(desired: &[IngressRule], existing: &[IngressRule]) -> Vec<IngressRule> {
    desired
        .iter()
        .filter(|d| {
            !existing.iter().any(|e| {
                e.protocol == d.protocol && e.from == d.from && e.to == d.to && e.source == d.source
            })
        })
        .cloned()
        .collect()
}

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

/// Trust policy letting `service` assume a role.
pub fn trust_policy(service: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": service},
            "Action": "sts:AssumeRole"
        }]
    })
}

/// Managed policy attached to the gateway role so SSM Session Manager works.
pub fn ssm_core_policy_arn(partition: &str) -> String {
    format!("arn:{partition}:iam::aws:policy/AmazonSSMManagedInstanceCore")
}

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

    fn repository_arn(&self) -> String {
        self.arn(
            "ecr",
            &format!("repository/{}", self.stack.ecr_repository()),
        )
    }

    fn parameters_arn(&self) -> String {
        self.arn("ssm", &format!("parameter{}*", self.stack.ssm_path()))
    }

    /// The gateway role's inline policy: only the stack's own resources.
    pub fn gateway_policy(&self) -> Value {
        let s = self.stack;
        let cluster = self.arn("ecs", &format!("cluster/{}", s.cluster()));
        json!({
            "Version": "2012-10-17",
            "Statement": [
                {"Sid": "EcrToken", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
                {"Sid": "EcrStackRepository", "Effect": "Allow", "Action": [
                    "ecr:CreateRepository", "ecr:DescribeRepositories", "ecr:DescribeImages",
                    "ecr:ListImages", "ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload",
                    "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage",
                    "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:PutLifecyclePolicy",
                    "ecr:GetLifecyclePolicy", "ecr:PutImageScanningConfiguration", "ecr:TagResource"
                ], "Resource": self.repository_arn()},
                {"Sid": "EcsStackCluster", "Effect": "Allow", "Action": [
                    "ecs:CreateCluster", "ecs:DescribeClusters", "ecs:PutClusterCapacityProviders",
                    "ecs:TagResource"
                ], "Resource": cluster},
                {"Sid": "EcsStackService", "Effect": "Allow", "Action": [
                    "ecs:CreateService", "ecs:UpdateService", "ecs:DescribeServices", "ecs:TagResource"
                ], "Resource": self.arn("ecs", &format!("service/{}/*", s.cluster()))},
                {"Sid": "EcsStackTasks", "Effect": "Allow", "Action": ["ecs:ListTasks", "ecs:DescribeTasks"],
                 "Resource": "*", "Condition": {"ArnEquals": {"ecs:cluster": cluster}}},
                {"Sid": "EcsTaskDefinitions", "Effect": "Allow", "Action": [
                    "ecs:RegisterTaskDefinition", "ecs:DescribeTaskDefinition", "ecs:ListTaskDefinitions"
                ], "Resource": "*"},
                {"Sid": "PassStackTaskRoles", "Effect": "Allow", "Action": "iam:PassRole",
                 "Resource": [self.role_arn(&s.execution_role()), self.role_arn(&s.task_role())],
                 "Condition": {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}},
                {"Sid": "StackParameters", "Effect": "Allow", "Action": [
                    "ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath",
                    "ssm:PutParameter", "ssm:AddTagsToResource"
                ], "Resource": self.parameters_arn()},
                {"Sid": "Artifacts", "Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
                 "Resource": [format!("arn:{}:s3:::{}", self.partition, self.bucket),
                              format!("arn:{}:s3:::{}/*", self.partition, self.bucket)]},
                {"Sid": "WorkerLogs", "Effect": "Allow", "Action": [
                    "logs:CreateLogGroup", "logs:PutRetentionPolicy", "logs:DescribeLogGroups", "logs:TagResource"
                ], "Resource": self.arn("logs", &format!("log-group:/fossa/{s}/*"))}
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
                 "Resource": self.arn("ssm", &format!("parameter{}", self.stack.ssm_parameter(ssm::BROKER_URL)))},
                {"Sid": "WorkerLogs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                 "Resource": self.arn("logs", &format!("log-group:{}:*", self.stack.log_group()))}
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architecture_from_instance_type() {
        for t in [
            "t4g.small",
            "m7g.large",
            "c6gn.xlarge",
            "im4gn.large",
            "x2gd.medium",
            "a1.large",
            "m6gd.large",
        ] {
            assert_eq!(Arch::of_instance_type(t), Arch::Arm64, "{t}");
        }
        for t in [
            "t3.small",
            "t2.medium",
            "g4dn.xlarge",
            "m5.large",
            "c7i.large",
            "r7iz.large",
            "inf2.xlarge",
        ] {
            assert_eq!(Arch::of_instance_type(t), Arch::X86_64, "{t}");
        }
        assert!(Arch::Arm64.al2023_parameter().ends_with("-arm64"));
    }

    #[test]
    fn default_layout_matches_the_recipe() {
        let l = SubnetLayout::for_vpc("192.168.0.0/16".parse().unwrap()).unwrap();
        assert_eq!(l.public.to_string(), "192.168.1.0/24");
        assert_eq!(l.private[0].to_string(), "192.168.2.0/24");
        assert_eq!(l.private[1].to_string(), "192.168.3.0/24");
        let l = SubnetLayout::for_vpc("10.20.0.0/22".parse().unwrap()).unwrap();
        assert_eq!(l.private[1].to_string(), "10.20.3.0/24");
    }

    #[test]
    fn unusable_vpc_cidrs_are_refused() {
        for c in [
            "192.168.0.0/24",
            "10.0.0.0/8",
            "8.8.0.0/16",
            "192.168.1.0/16",
        ] {
            let net: Ipv4Net = c.parse().unwrap();
            let e = SubnetLayout::for_vpc(net).unwrap_err();
            assert!(e.to_string().contains("--vpc-cidr"), "{c}");
        }
    }

    #[test]
    fn gateway_rules_have_no_ssh_and_ui_only_from_allow() {
        let l = SubnetLayout::for_vpc("192.168.0.0/16".parse().unwrap()).unwrap();
        let rules = gateway_ingress("203.0.113.7/32".parse().unwrap(), &l, "sg-task");
        assert!(rules.iter().all(|r| r.from != 22));
        let ui: Vec<_> = rules.iter().filter(|r| r.from == UI_PORT).collect();
        assert_eq!(ui.len(), 1);
        assert_eq!(ui[0].source, Source::Cidr("203.0.113.7/32".into()));
        assert!(rules
            .iter()
            .any(|r| r.from == 5672 && r.source == Source::Group("sg-task".into())));
        assert!(rules
            .iter()
            .all(|r| r.source != Source::Cidr("0.0.0.0/0".into())));
    }

    #[test]
    fn missing_rules_ignores_descriptions() {
        let want = task_ingress("sg-gw");
        let mut have = want.clone();
        have[0].description = "other".into();
        assert!(missing_rules(&want, &have).is_empty());
        assert_eq!(missing_rules(&want, &[]), want);
    }

    #[test]
    fn policies_are_scoped_to_the_stack() {
        let stack = StackName::new("dev").unwrap();
        let scope = Scope {
            stack: &stack,
            partition: "aws",
            region: "eu-west-2",
            account: "123456789012",
            bucket: "b",
        };
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
}
