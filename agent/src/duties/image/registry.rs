//! The stack's ECR repository and the credentials to push to it.

use bollard::auth::DockerCredentials;
use fossa_contract::aws::AwsResultExt;
use fossa_contract::{tags, StackName};

use super::{ImageError, KEEP_IMAGES};

/// Credentials for a registry, from ECR's token (never logged).
#[derive(Clone)]
pub struct RegistryAuth {
    /// `host[:port]`.
    pub host: String,
    username: String,
    password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl RegistryAuth {
    pub(super) fn credentials(&self) -> DockerCredentials {
        DockerCredentials {
            username: Some(self.username.clone()),
            password: Some(self.password.clone()),
            serveraddress: Some(self.host.clone()),
            ..Default::default()
        }
    }
}

/// Fetches a fresh ECR token; `registry` replaces the token's endpoint (tests, mirrors).
pub async fn registry_auth(
    ecr: &aws_sdk_ecr::Client,
    registry: Option<&str>,
) -> Result<RegistryAuth, ImageError> {
    let out = ecr
        .get_authorization_token()
        .send()
        .await
        .aws("ecr:GetAuthorizationToken", "the account's registry")?;
    let data = out
        .authorization_data()
        .first()
        .ok_or(ImageError::Token("no authorization data"))?;
    let token = aws_smithy_types::base64::decode(data.authorization_token().unwrap_or_default())
        .map_err(|_| ImageError::Token("not base64"))?;
    let token = String::from_utf8_lossy(&token).into_owned();
    let (username, password) = token
        .split_once(':')
        .ok_or(ImageError::Token("no user name"))?;
    let endpoint = data.proxy_endpoint().unwrap_or_default();
    let host = registry.map(str::to_owned).unwrap_or_else(|| {
        endpoint
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_owned()
    });
    Ok(RegistryAuth {
        host,
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

/// The repository's scan setting: scan every pushed image.
fn scan_on_push() -> aws_sdk_ecr::types::ImageScanningConfiguration {
    aws_sdk_ecr::types::ImageScanningConfiguration::builder()
        .scan_on_push(true)
        .build()
}

/// The repository's lifecycle policy: keep the last [`KEEP_IMAGES`] images.
fn lifecycle_policy() -> serde_json::Value {
    serde_json::json!({"rules": [{"rulePriority": 1, "description": format!("keep the last {KEEP_IMAGES} images"),
        "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": KEEP_IMAGES}, "action": {"type": "expire"}}]})
}

/// Creates the stack's ECR repository if missing (scan on push, keep the last
/// 10 images, tagged), and repairs the lifecycle policy of one that exists (a
/// crash can fall between creating it and setting that). The scan setting is
/// given at creation only: PutImageScanningConfiguration is deprecated in
/// favour of the registry's own scanning configuration, and in an account
/// that has one, DescribeRepositories reports `scanOnPush` false whatever is
/// set, so a repair would run every minute
/// (<https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_PutImageScanningConfiguration.html>).
/// Returns whether it created the repository.
pub async fn ensure_repository(
    ecr: &aws_sdk_ecr::Client,
    stack: &StackName,
) -> Result<bool, ImageError> {
    let name = stack.ecr_repository();
    let existing = match ecr
        .describe_repositories()
        .repository_names(&name)
        .send()
        .await
        .aws("ecr:DescribeRepositories", &name)
    {
        Ok(out) => out.repositories().first().cloned(),
        Err(e) if e.is_code("RepositoryNotFoundException") => None,
        Err(e) => return Err(e.into()),
    };
    if existing.is_some() {
        let current = match ecr
            .get_lifecycle_policy()
            .repository_name(&name)
            .send()
            .await
            .aws("ecr:GetLifecyclePolicy", &name)
        {
            Ok(out) => out
                .lifecycle_policy_text()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok()),
            Err(e) if e.is_code("LifecyclePolicyNotFoundException") => None,
            Err(e) => return Err(e.into()),
        };
        if current.as_ref() != Some(&lifecycle_policy()) {
            put_lifecycle_policy(ecr, &name).await?;
        }
        return Ok(false);
    }
    let mut req = ecr
        .create_repository()
        .repository_name(&name)
        .image_scanning_configuration(scan_on_push());
    for (k, v) in tags::standard(stack, tags::BY_AGENT) {
        req = req.tags(
            aws_sdk_ecr::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|source| ImageError::Request {
                    what: "ECR tag",
                    source,
                })?,
        );
    }
    req.send().await.aws("ecr:CreateRepository", &name)?;
    fossa_contract::fault::exit_at(fossa_contract::fault::Point::EcrRepositoryCreated);
    put_lifecycle_policy(ecr, &name).await?;
    Ok(true)
}

async fn put_lifecycle_policy(ecr: &aws_sdk_ecr::Client, name: &str) -> Result<(), ImageError> {
    ecr.put_lifecycle_policy()
        .repository_name(name)
        .lifecycle_policy_text(lifecycle_policy().to_string())
        .send()
        .await
        .aws("ecr:PutLifecyclePolicy", name)?;
    Ok(())
}
