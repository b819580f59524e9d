//! `destroy`'s artifact bucket, emptied (every version) and deleted.

use fossa_contract::aws::AwsResultExt;

use super::Destroyer;
use crate::progress::Outcome;
use crate::{Error, Result};

impl Destroyer<'_> {
    pub(super) async fn bucket(&mut self, account: &str) -> Result<()> {
        let s3 = &self.c.s3;
        let bucket = self.stack.bucket(account, &self.c.region);
        if s3.head_bucket().bucket(&bucket).send().await.is_err() {
            return Ok(());
        }
        loop {
            let page = s3
                .list_object_versions()
                .bucket(&bucket)
                .send()
                .await
                .aws("s3:ListObjectVersions", &bucket)?;
            let mut ids: Vec<aws_sdk_s3::types::ObjectIdentifier> = Vec::new();
            for v in page.versions() {
                if let Some(k) = v.key() {
                    ids.push(
                        aws_sdk_s3::types::ObjectIdentifier::builder()
                            .key(k)
                            .set_version_id(v.version_id().map(str::to_owned))
                            .build()
                            .map_err(|e| Error::Unexpected(e.to_string()))?,
                    );
                }
            }
            for m in page.delete_markers() {
                if let Some(k) = m.key() {
                    ids.push(
                        aws_sdk_s3::types::ObjectIdentifier::builder()
                            .key(k)
                            .set_version_id(m.version_id().map(str::to_owned))
                            .build()
                            .map_err(|e| Error::Unexpected(e.to_string()))?,
                    );
                }
            }
            if ids.is_empty() {
                break;
            }
            for chunk in ids.chunks(1000) {
                let del = aws_sdk_s3::types::Delete::builder()
                    .set_objects(Some(chunk.to_vec()))
                    .quiet(true)
                    .build()
                    .map_err(|e| Error::Unexpected(e.to_string()))?;
                s3.delete_objects()
                    .bucket(&bucket)
                    .delete(del)
                    .send()
                    .await
                    .aws("s3:DeleteObjects", &bucket)?;
            }
        }
        s3.delete_bucket()
            .bucket(&bucket)
            .send()
            .await
            .aws("s3:DeleteBucket", &bucket)?;
        self.p.done(
            Outcome::Deleted,
            "artifact bucket (with its objects)",
            &bucket,
        );
        Ok(())
    }
}
