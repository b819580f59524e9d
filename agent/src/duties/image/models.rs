//! The user's models from the artifact bucket, cached by ETag.

use fossa_contract::aws::AwsResultExt;
use fossa_contract::names::MODELS_OBJECT_KEY;

use super::{example_models, unpack_models, ImageError, ModelFile};

/// Cached download of the models tarball: fetched again only when its ETag changes.
#[derive(Debug, Default)]
pub struct ModelsCache {
    etag: Option<String>,
    /// The hash the cached files were checked against.
    sha256: Option<String>,
    files: Vec<ModelFile>,
}

impl ModelsCache {
    /// The user's models from the bucket, or the built-in ones when there
    /// are none. An archive whose SHA-256 is not `expected` is refused, and
    /// so is a bucket `owner` (the stack's account) does not own.
    pub async fn load(
        &mut self,
        s3: &aws_sdk_s3::Client,
        bucket: &str,
        owner: &str,
        has_models: bool,
        expected: Option<&str>,
    ) -> Result<Vec<ModelFile>, ImageError> {
        if !has_models {
            return Ok(example_models());
        }
        let head = s3
            .head_object()
            .bucket(bucket)
            .expected_bucket_owner(owner)
            .key(MODELS_OBJECT_KEY)
            .send()
            .await
            .aws(
                "s3:HeadObject",
                format!("s3://{bucket}/{MODELS_OBJECT_KEY}"),
            )?;
        let etag = head.e_tag().map(str::to_owned);
        if etag.is_some() && etag == self.etag && expected == self.sha256.as_deref() {
            return Ok(self.files.clone());
        }
        let obj = s3
            .get_object()
            .bucket(bucket)
            .expected_bucket_owner(owner)
            .key(MODELS_OBJECT_KEY)
            .customize()
            .config_override(fossa_contract::aws::transfer_timeouts())
            .send()
            .await
            .aws("s3:GetObject", format!("s3://{bucket}/{MODELS_OBJECT_KEY}"))?;
        let bytes = fossa_contract::aws::read_body(obj.body)
            .await
            .map_err(|e| ImageError::Models(fossa_contract::aws::chain(&e)))?;
        let got = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&bytes))
        };
        if let Some(expected) = expected.filter(|e| *e != got) {
            return Err(ImageError::ModelsHash {
                expected: expected.to_owned(),
                got,
            });
        }
        self.files = unpack_models(&bytes)?;
        self.etag = etag;
        self.sha256 = Some(got).filter(|_| expected.is_some());
        Ok(self.files.clone())
    }
}
