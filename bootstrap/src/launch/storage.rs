//! `launch`'s storage steps: the artifact bucket with its guards, and the
//! uploads (the agent binary, the models tarball) kept by their SHA-256.

use std::path::Path;

use aws_sdk_s3::primitives::ByteStream;
use sha2::{Digest, Sha256};

use fossa_contract::aws::AwsResultExt;
use fossa_contract::tags;

use super::Launcher;
use crate::aws::same_json;
use crate::progress::Outcome;
use crate::{Error, Result};

/// A deterministic gzipped tarball of `dir` (sorted entries, zero times), so
/// its hash only changes when the models do.
pub fn models_tarball(dir: &Path) -> Result<Vec<u8>> {
    let read = |p: &Path, e| Error::Read {
        path: p.to_owned(),
        source: e,
    };
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| read(&d, e))? {
            let entry = entry.map_err(|e| read(&d, e))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name == "__pycache__" {
                continue;
            }
            // The entry itself, not what a link points to: a link could
            // pack a file from outside the models (credentials) into the
            // image, or, pointing at a parent, walk for ever.
            let kind = entry.file_type().map_err(|e| read(&path, e))?;
            if kind.is_symlink() {
                let target = std::fs::read_link(&path)
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|_| "?".into());
                return Err(Error::Usage(format!(
                    "--models {}: {} is a symbolic link (to {target}); launch packs the models' own files only: \
                     copy the file it points to in its place, or remove it",
                    dir.display(),
                    path.display()
                )));
            }
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    for f in &files {
        let rel = f.strip_prefix(dir).expect("below dir");
        let data = std::fs::read(f).map_err(|e| read(f, e))?;
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, rel, data.as_slice())
            .map_err(|e| read(f, e))?;
    }
    let gz = tar.into_inner().map_err(|e| read(dir, e))?;
    gz.finish().map_err(|e| read(dir, e))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Launcher<'_> {
    /// The bucket, with its public-access block and TLS-only policy checked
    /// (and repaired) on every run, not only when it is made.
    pub(super) async fn bucket(&mut self, bucket: &str, policy: &serde_json::Value) -> Result<()> {
        let s3 = &self.c.s3;
        let mut outcome = Outcome::Found;
        // A bucket of this name in another account (deleted and taken over,
        // with a policy open enough to answer) is refused, never used.
        let owner = self.id.account.clone();
        match s3
            .head_bucket()
            .bucket(bucket)
            .expected_bucket_owner(&owner)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => {
                let mut b = s3.create_bucket().bucket(bucket);
                if self.c.region != "us-east-1" {
                    b = b.create_bucket_configuration(
                        aws_sdk_s3::types::CreateBucketConfiguration::builder()
                            .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(self.c.region.as_str()))
                            .build(),
                    );
                }
                b.send().await.aws("s3:CreateBucket", bucket)?;
                outcome = Outcome::Created;
            }
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(403) => {
                return Err(Error::Usage(format!(
                    "bucket {bucket} exists but belongs to another account or denies access; use another --stack name"
                )))
            }
            Err(e) => return Err(fossa_contract::aws::aws_error("s3:HeadBucket", bucket, e).into()),
        }
        let blocked = match s3.get_public_access_block().bucket(bucket).send().await {
            Ok(out) => out.public_access_block_configuration().is_some_and(|c| {
                c.block_public_acls() == Some(true)
                    && c.block_public_policy() == Some(true)
                    && c.ignore_public_acls() == Some(true)
                    && c.restrict_public_buckets() == Some(true)
            }),
            Err(_) => false,
        };
        if !blocked {
            s3.put_public_access_block()
                .bucket(bucket)
                .public_access_block_configuration(
                    aws_sdk_s3::types::PublicAccessBlockConfiguration::builder()
                        .block_public_acls(true)
                        .block_public_policy(true)
                        .ignore_public_acls(true)
                        .restrict_public_buckets(true)
                        .build(),
                )
                .send()
                .await
                .aws("s3:PutPublicAccessBlock", bucket)?;
            if outcome == Outcome::Found {
                outcome = Outcome::Updated;
            }
        }
        let same_policy = if self.c.plain_http {
            self.p.note(
                "the endpoint is plain HTTP (an emulator): the bucket's TLS-only policy is not applied",
            );
            true
        } else {
            match s3.get_bucket_policy().bucket(bucket).send().await {
                Ok(out) => out.policy().is_some_and(|p| same_json(p, policy)),
                Err(_) => false,
            }
        };
        if !same_policy {
            s3.put_bucket_policy()
                .bucket(bucket)
                .policy(policy.to_string())
                .send()
                .await
                .aws("s3:PutBucketPolicy", bucket)?;
            if outcome == Outcome::Found {
                outcome = Outcome::Updated;
            }
        }
        let tagged = match s3.get_bucket_tagging().bucket(bucket).send().await {
            Ok(t) => t
                .tag_set()
                .iter()
                .any(|t| t.key() == tags::STACK && t.value() == self.stack.as_str()),
            Err(_) => false,
        };
        if !tagged {
            let mut set = aws_sdk_s3::types::Tagging::builder();
            for (k, v) in tags::standard(&self.stack, tags::BY_BOOTSTRAP) {
                set = set.tag_set(
                    aws_sdk_s3::types::Tag::builder()
                        .key(k)
                        .value(v)
                        .build()
                        .map_err(|e| Error::Unexpected(e.to_string()))?,
                );
            }
            s3.put_bucket_tagging()
                .bucket(bucket)
                .tagging(set.build().map_err(|e| Error::Unexpected(e.to_string()))?)
                .send()
                .await
                .aws("s3:PutBucketTagging", bucket)?;
            if outcome == Outcome::Found {
                outcome = Outcome::Updated;
            }
        }
        self.p.done(outcome, "artifact bucket", bucket);
        Ok(())
    }

    /// Uploads `bytes` to `key` unless an object with the same SHA-256 is there.
    pub(super) async fn artifact(
        &mut self,
        bucket: &str,
        key: &str,
        bytes: &[u8],
        what: &str,
    ) -> Result<String> {
        let sha = sha256_hex(bytes);
        let s3 = &self.c.s3;
        let owner = self.id.account.clone();
        let same = match s3
            .head_object()
            .bucket(bucket)
            .expected_bucket_owner(&owner)
            .key(key)
            .send()
            .await
        {
            Ok(h) => h.metadata().and_then(|m| m.get("sha256")) == Some(&sha),
            Err(_) => false,
        };
        let outcome = if same {
            Outcome::Found
        } else {
            self.p
                .working(&format!("uploading {what} ({} KiB)", bytes.len() / 1024));
            s3.put_object()
                .bucket(bucket)
                .expected_bucket_owner(&owner)
                .key(key)
                .metadata("sha256", &sha)
                .body(ByteStream::from(bytes.to_vec()))
                .customize()
                .config_override(fossa_contract::aws::transfer_timeouts())
                .send()
                .await
                .aws("s3:PutObject", format!("s3://{bucket}/{key}"))?;
            Outcome::Created
        };
        self.p.done(
            outcome,
            what,
            &format!("s3://{bucket}/{key} sha256 {}", &sha[..12]),
        );
        Ok(sha)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_in_the_models_is_refused_by_name_and_nothing_outside_is_read() {
        let d = std::env::temp_dir().join(format!("fossa-models-links-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("models/sub")).unwrap();
        std::fs::write(d.join("models/a.py"), "x = 1\n").unwrap();
        std::fs::write(
            d.join("credentials"),
            "aws_secret_access_key = SECRET-OUTSIDE\n",
        )
        .unwrap();
        let models = d.join("models");
        std::os::unix::fs::symlink(d.join("credentials"), models.join("config.txt")).unwrap();
        let t = std::time::Instant::now();
        let e = models_tarball(&models).unwrap_err().to_string();
        assert!(
            e.contains("config.txt") && e.contains("symbolic link"),
            "{e}"
        );
        std::fs::remove_file(models.join("config.txt")).unwrap();
        // A link to a parent: refused at once, not walked for ever.
        std::os::unix::fs::symlink("..", models.join("sub/up")).unwrap();
        let e = models_tarball(&models).unwrap_err().to_string();
        assert!(e.contains("up") && e.contains("symbolic link"), "{e}");
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
        std::fs::remove_file(models.join("sub/up")).unwrap();
        let tarball = models_tarball(&models).unwrap();
        let mut text = Vec::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(tarball.as_slice())
            .read_to_end(&mut text)
            .unwrap();
        assert!(!String::from_utf8_lossy(&text).contains("SECRET-OUTSIDE"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn models_tarball_is_deterministic() {
        let d = std::env::temp_dir().join(format!("fossa-models-{}", std::process::id()));
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("a.py"), "x = 1\n").unwrap();
        std::fs::write(d.join("sub/b.py"), "y = 2\n").unwrap();
        let a = models_tarball(&d).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(d.join("a.py"), "x = 1\n").unwrap();
        assert_eq!(sha256_hex(&a), sha256_hex(&models_tarball(&d).unwrap()));
        std::fs::write(d.join("a.py"), "x = 3\n").unwrap();
        assert_ne!(sha256_hex(&a), sha256_hex(&models_tarball(&d).unwrap()));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
