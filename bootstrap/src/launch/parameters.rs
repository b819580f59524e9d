//! `launch`'s SSM parameters: the stack config, the agent's hash and the UI
//! password (SecureString).

use aws_sdk_ssm::types::ParameterType;

use fossa_contract::aws::AwsResultExt;
use fossa_contract::tags;

use super::Launcher;
use crate::progress::Outcome;
use crate::{Error, Result};

impl Launcher<'_> {
    /// Writes parameter `key` unless it already holds `value`; returns whether it wrote.
    pub(super) async fn parameter(
        &mut self,
        key: &str,
        value: &str,
        secure: bool,
        overwrite: bool,
    ) -> Result<Outcome> {
        let ssm_c = &self.c.ssm;
        let name = self.stack.ssm_parameter(key);
        let current = ssm_c
            .get_parameter()
            .name(&name)
            .with_decryption(true)
            .send()
            .await
            .aws("ssm:GetParameter", &name);
        let (exists, same) = match current {
            Ok(p) => {
                let v = p.parameter().and_then(|p| p.value()).unwrap_or_default();
                let as_json = |x: &str| serde_json::from_str::<serde_json::Value>(x).ok();
                (
                    true,
                    v == value || (!secure && as_json(v).is_some() && as_json(v) == as_json(value)),
                )
            }
            Err(e) if e.is_code("ParameterNotFound") => (false, false),
            Err(e) => return Err(e.into()),
        };
        if exists && (same || !overwrite) {
            return Ok(Outcome::Found);
        }
        let kind = if secure {
            ParameterType::SecureString
        } else {
            ParameterType::String
        };
        let mut b = ssm_c
            .put_parameter()
            .name(&name)
            .value(value)
            .r#type(kind)
            .overwrite(exists);
        if !exists {
            for (k, v) in tags::standard(&self.stack, tags::BY_BOOTSTRAP) {
                b = b.tags(
                    aws_sdk_ssm::types::Tag::builder()
                        .key(k)
                        .value(v)
                        .build()
                        .map_err(|e| Error::Unexpected(e.to_string()))?,
                );
            }
        }
        b.send().await.aws("ssm:PutParameter", &name)?;
        Ok(if exists {
            Outcome::Updated
        } else {
            Outcome::Created
        })
    }
}
