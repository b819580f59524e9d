//! Images pinned at first use. The base and broker images are named by tag
//! (`agent.toml`'s `base_image`, `broker_image`, or the defaults in
//! `fossa_contract::names::images`), and a tag can be moved to other bytes
//! by whoever controls the registry. The first time the agent uses an image
//! it records what the tag gave: the registry digest (`repo@sha256:…`),
//! or, for an image only this machine's engine holds, its image id. From
//! then on it uses the digest itself, so every later build, a replacement
//! instance and the broker get exactly those bytes; and an id-pinned tag
//! that now names another image is refused, with the way to accept it.
//! A reference that already names a digest is used as it is.
//!
//! The record is `image-pins.json` in the state directory (0600). To move
//! to a newer image, name another tag or digest in agent.toml (it is pinned
//! at its own first use), or delete the image's line from that file.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;

use super::docker::{call, DockerError};
use crate::events::Events;

/// The file the pins are kept in, in the state directory.
pub const PINS_FILE: &str = "image-pins.json";

/// Why an image could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// Docker failed (inspect, pull).
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// The tag names another image than the one pinned at first use.
    #[error("the image {reference} is now {now}, not the {pinned} pinned when it was first used here: its tag was moved, so it is not used. If the change is yours, delete its line from {file} (or name the new image by digest in agent.toml) and it is pinned again")]
    Moved {
        /// The reference as configured.
        reference: String,
        /// What was pinned.
        pinned: String,
        /// What the tag gives now.
        now: String,
        /// The pins file.
        file: String,
    },
    /// The pins file could not be read or written.
    #[error("cannot {what} {path}: fix its permissions or free space; no image is used unpinned")]
    File {
        /// Read or write.
        what: &'static str,
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// What the engine says of the image a tag names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Its image id (`sha256:…`).
    pub id: String,
    /// Its registry digests (`repo@sha256:…`).
    pub repo_digests: Vec<String>,
}

/// What to do with a configured reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Use this reference.
    Use(String),
    /// Record `pin` for the reference, then use `reference`.
    Record {
        /// What to keep.
        pin: String,
        /// What to use.
        reference: String,
    },
    /// Refuse: the tag names another image than the pinned one.
    Moved {
        /// What was pinned.
        pinned: String,
        /// What the tag names now.
        now: String,
    },
}

/// The repository of a reference: without its tag or digest.
pub fn repository(reference: &str) -> &str {
    let r = reference.split('@').next().unwrap_or(reference);
    match r.rfind(':') {
        Some(i) if !r[i..].contains('/') => &r[..i],
        _ => r,
    }
}

/// Whether `reference` already names a digest.
pub fn names_digest(reference: &str) -> bool {
    reference.contains("@sha256:")
}

/// Plain data: what `configured` resolves to, given its pin and (when it
/// must be looked at) what the engine holds under it.
pub fn decide(configured: &str, pinned: Option<&str>, seen: Option<&Seen>) -> Decision {
    if names_digest(configured) {
        return Decision::Use(configured.to_owned());
    }
    match (pinned, seen) {
        (Some(p), _) if names_digest(p) => Decision::Use(p.to_owned()),
        (Some(p), Some(s)) if s.id == p => Decision::Use(configured.to_owned()),
        (Some(p), Some(s)) => Decision::Moved {
            pinned: p.to_owned(),
            now: s.id.clone(),
        },
        (Some(p), None) => Decision::Moved {
            pinned: p.to_owned(),
            now: "missing".into(),
        },
        (None, Some(s)) => {
            let repo = repository(configured);
            match s.repo_digests.iter().find(|d| repository(d) == repo) {
                Some(d) => Decision::Record {
                    pin: d.clone(),
                    reference: d.clone(),
                },
                None => Decision::Record {
                    pin: s.id.clone(),
                    reference: configured.to_owned(),
                },
            }
        }
        (None, None) => Decision::Use(configured.to_owned()),
    }
}

fn read(path: &Path) -> Result<BTreeMap<String, String>, PinError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| PinError::File {
            what: "parse",
            path: path.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(source) => Err(PinError::File {
            what: "read",
            path: path.display().to_string(),
            source,
        }),
    }
}

fn write(path: &Path, pins: &BTreeMap<String, String>) -> Result<(), PinError> {
    let tmp = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let text = serde_json::to_vec_pretty(pins).expect("serialises");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&text).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| PinError::File {
            what: "write",
            path: path.display().to_string(),
            source,
        })
}

/// What the engine holds under `reference`, pulled first if it holds nothing.
async fn look(docker: &Docker, reference: &str) -> Result<Seen, DockerError> {
    let i = match docker.inspect_image(reference).await {
        Ok(i) => i,
        Err(_) => {
            pull(docker, reference).await?;
            docker
                .inspect_image(reference)
                .await
                .map_err(call("inspect image"))?
        }
    };
    Ok(Seen {
        id: i.id.unwrap_or_default(),
        repo_digests: i.repo_digests.unwrap_or_default(),
    })
}

/// Pulls `reference` into the engine.
pub async fn pull(docker: &Docker, reference: &str) -> Result<(), DockerError> {
    let mut stream = docker.create_image(
        Some(
            CreateImageOptionsBuilder::default()
                .from_image(reference)
                .build(),
        ),
        None,
        None,
    );
    while let Some(item) = stream.next().await {
        item.map_err(call("pull"))?;
    }
    Ok(())
}

/// The reference to use for `configured`, pinned at its first use (see the
/// module docs). A new pin is an event. An image pinned by digest costs no
/// call here.
pub async fn resolve(
    docker: &Docker,
    state_dir: &Path,
    configured: &str,
    events: &Events,
    source: &'static str,
) -> Result<String, PinError> {
    let path: PathBuf = state_dir.join(PINS_FILE);
    let mut pins = read(&path)?;
    let pinned = pins.get(configured).cloned();
    let seen = match (&pinned, names_digest(configured)) {
        (_, true) => None,
        (Some(p), _) if names_digest(p) => None,
        _ => Some(look(docker, configured).await?),
    };
    match decide(configured, pinned.as_deref(), seen.as_ref()) {
        // A build pulls its base when the engine lacks it, and the broker
        // duty pulls its image: nothing to fetch here.
        Decision::Use(r) => Ok(r),
        Decision::Record { pin, reference } => {
            pins.insert(configured.to_owned(), pin.clone());
            write(&path, &pins)?;
            events.push(
                source,
                false,
                format!("pinned {configured} at its first use: {pin}"),
            );
            Ok(reference)
        }
        Decision::Moved { pinned, now } => Err(PinError::Moved {
            reference: configured.to_owned(),
            pinned,
            now,
            file: path.display().to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(id: &str, digests: &[&str]) -> Seen {
        Seen {
            id: id.into(),
            repo_digests: digests.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn repositories_lose_their_tag_and_digest_but_not_their_port() {
        assert_eq!(repository("python:3.12"), "python");
        assert_eq!(repository("127.0.0.1:5000/a/b:1"), "127.0.0.1:5000/a/b");
        assert_eq!(repository("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b");
        assert_eq!(repository("r/p@sha256:ab"), "r/p");
    }

    #[test]
    fn a_registry_image_is_pinned_to_its_digest_and_used_by_it_from_then_on() {
        let tag = "public.ecr.aws/docker/library/python:3.12-slim";
        let d = "public.ecr.aws/docker/library/python@sha256:aa";
        let first = decide(
            tag,
            None,
            Some(&seen("sha256:1", &[d, "other/repo@sha256:bb"])),
        );
        assert_eq!(
            first,
            Decision::Record {
                pin: d.into(),
                reference: d.into()
            }
        );
        // Later: the tag is not even looked at, whatever it names now.
        assert_eq!(decide(tag, Some(d), None), Decision::Use(d.into()));
        assert_eq!(
            decide(tag, Some(d), Some(&seen("sha256:2", &[]))),
            Decision::Use(d.into())
        );
    }

    #[test]
    fn a_local_image_is_pinned_to_its_id_and_a_moved_tag_is_refused() {
        let tag = "fossa-test-python:abc";
        assert_eq!(
            decide(tag, None, Some(&seen("sha256:1", &[]))),
            Decision::Record {
                pin: "sha256:1".into(),
                reference: tag.into()
            }
        );
        assert_eq!(
            decide(tag, Some("sha256:1"), Some(&seen("sha256:1", &[]))),
            Decision::Use(tag.into())
        );
        assert_eq!(
            decide(tag, Some("sha256:1"), Some(&seen("sha256:2", &[]))),
            Decision::Moved {
                pinned: "sha256:1".into(),
                now: "sha256:2".into()
            }
        );
    }

    #[test]
    fn a_reference_by_digest_is_used_as_it_is() {
        let r = "r/p@sha256:cc";
        assert_eq!(decide(r, None, None), Decision::Use(r.into()));
        assert_eq!(decide(r, Some("sha256:1"), None), Decision::Use(r.into()));
    }

    #[test]
    fn the_pins_file_is_private_and_round_trips() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("fossa-pins-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(PINS_FILE);
        assert!(read(&path).unwrap().is_empty());
        let mut m = BTreeMap::new();
        m.insert("a:1".to_owned(), "sha256:1".to_owned());
        write(&path, &m).unwrap();
        assert_eq!(read(&path).unwrap(), m);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(
            read(&path),
            Err(PinError::File { what: "parse", .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
