//! The AWS clients of `fossa-bootstrap`, all built from one `SdkConfig` and
//! all counting their requests.

use fossa_contract::aws::{s3_client, sdk_config, AwsResultExt, AwsSettings, CallCounter};
use fossa_contract::counted_client;

use crate::Result;

/// Every client the bootstrap uses.
#[derive(Debug, Clone)]
pub struct Clients {
    /// EC2.
    pub ec2: aws_sdk_ec2::Client,
    /// EC2 Auto Scaling: the gateway's group of one.
    pub autoscaling: aws_sdk_autoscaling::Client,
    /// IAM.
    pub iam: aws_sdk_iam::Client,
    /// S3 (path-style against an emulator).
    pub s3: aws_sdk_s3::Client,
    /// SSM.
    pub ssm: aws_sdk_ssm::Client,
    /// STS.
    pub sts: aws_sdk_sts::Client,
    /// ECS (destroy only).
    pub ecs: aws_sdk_ecs::Client,
    /// ECR (destroy only).
    pub ecr: aws_sdk_ecr::Client,
    /// CloudWatch Logs (destroy only).
    pub logs: aws_sdk_cloudwatchlogs::Client,
    /// Service Quotas (launch reads the Fargate vCPU quotas).
    pub quotas: aws_sdk_servicequotas::Client,
    /// Requests sent so far.
    pub counter: CallCounter,
    /// The region in use.
    pub region: String,
    /// Whether an endpoint URL (emulator) is in use.
    pub emulated: bool,
    /// The endpoint URL in use, if any (an emulator).
    pub endpoint: Option<String>,
    /// Whether the endpoint is plain HTTP (an emulator): a TLS-only bucket
    /// policy would refuse every call made through it.
    pub plain_http: bool,
}

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Account id.
    pub account: String,
    /// Partition (`aws`, `aws-cn`, `aws-us-gov`).
    pub partition: String,
}

impl Clients {
    /// Loads the configuration and builds every client.
    pub async fn new(settings: &AwsSettings) -> Result<Self> {
        let sdk = sdk_config(settings).await?;
        let counter = CallCounter::default();
        Ok(Self {
            ec2: counted_client!(aws_sdk_ec2, &sdk, counter),
            autoscaling: counted_client!(aws_sdk_autoscaling, &sdk, counter),
            iam: counted_client!(aws_sdk_iam, &sdk, counter),
            s3: s3_client(&sdk, &counter),
            ssm: counted_client!(aws_sdk_ssm, &sdk, counter),
            sts: counted_client!(aws_sdk_sts, &sdk, counter),
            ecs: counted_client!(aws_sdk_ecs, &sdk, counter),
            ecr: counted_client!(aws_sdk_ecr, &sdk, counter),
            logs: counted_client!(aws_sdk_cloudwatchlogs, &sdk, counter),
            quotas: counted_client!(aws_sdk_servicequotas, &sdk, counter),
            region: sdk.region().map(|r| r.to_string()).unwrap_or_default(),
            emulated: sdk.endpoint_url().is_some(),
            endpoint: sdk.endpoint_url().map(str::to_owned),
            plain_http: sdk.endpoint_url().is_some_and(|u| u.starts_with("http://")),
            counter,
        })
    }

    /// The caller's account and partition; fails clearly without credentials.
    pub async fn identity(&self) -> Result<Identity> {
        let me = self
            .sts
            .get_caller_identity()
            .send()
            .await
            .aws("sts:GetCallerIdentity", "the caller")?;
        let arn = me.arn().unwrap_or("arn:aws:");
        Ok(Identity {
            account: me.account().unwrap_or_default().to_owned(),
            partition: arn
                .split(':')
                .nth(1)
                .filter(|p| !p.is_empty())
                .unwrap_or("aws")
                .to_owned(),
        })
    }
}
