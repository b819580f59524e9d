//! Where the session generation is kept: a file the UI opens by path, or
//! one the agent's core opened for it (the UI process cannot reach the
//! state directory, so it is handed the open file).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// What is kept on disk about sessions.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct SessionState {
    /// Sessions of another generation are refused.
    pub(super) generation: u64,
    /// The password's argon2 hash when the generation was written.
    pub(super) password_hash: Option<String>,
}

/// The session-state file.
#[derive(Debug, Clone)]
pub enum SessionStore {
    /// Opened by path; replaced whole with each write.
    Path(PathBuf),
    /// Already open for reading and writing; rewritten in place. A write cut
    /// short leaves a damaged file, read as a fresh generation.
    Open(Arc<std::fs::File>),
}

impl From<PathBuf> for SessionStore {
    fn from(p: PathBuf) -> Self {
        SessionStore::Path(p)
    }
}

impl SessionStore {
    /// The state kept here. A missing, unreadable or damaged file starts a
    /// generation no earlier session can have (the time now, far above any
    /// count of logouts), so a lost file never brings back sessions that a
    /// logout or a new password ended.
    pub(super) fn load(&self) -> SessionState {
        let fresh = || SessionState {
            generation: fossa_contract::unix_now().max(1) as u64,
            password_hash: None,
        };
        let text = match self {
            SessionStore::Path(p) => std::fs::read_to_string(p),
            SessionStore::Open(f) => {
                let mut text = String::new();
                (&**f)
                    .seek(SeekFrom::Start(0))
                    .and_then(|_| (&**f).read_to_string(&mut text))
                    .map(|_| text)
            }
        };
        let Ok(text) = text else {
            return fresh();
        };
        serde_json::from_str(&text).unwrap_or_else(|_| {
            // The first format held the generation alone.
            text.trim()
                .parse()
                .map(|generation| SessionState {
                    generation,
                    password_hash: None,
                })
                .unwrap_or_else(|_| fresh())
        })
    }

    /// Keeps `state`; a failure is logged (sessions still work, but a
    /// restart starts a fresh generation).
    pub(super) fn save(&self, state: &SessionState) {
        let json = serde_json::to_string(state).expect("json");
        let written = match self {
            SessionStore::Path(p) => write_new(p, &json),
            SessionStore::Open(f) => (&**f)
                .seek(SeekFrom::Start(0))
                .and_then(|_| f.set_len(0))
                .and_then(|_| (&**f).write_all(json.as_bytes()))
                .and_then(|_| f.sync_data()),
        };
        if let Err(e) = written {
            tracing::warn!("cannot keep the session generation: {e}");
        }
    }
}

/// Writes `p` whole through a temporary file, its owner's only: it holds
/// the password's hash.
fn write_new(p: &std::path::Path, json: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = p.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(json.as_bytes())?;
    std::fs::rename(&tmp, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_file_keeps_the_generation_like_a_path() {
        let dir = std::env::temp_dir().join(format!("fossa-session-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        let open = SessionStore::Open(Arc::new(f));
        // Empty: a fresh generation, from the time now.
        assert!(open.load().generation >= 1_700_000_000);
        open.save(&SessionState {
            generation: 1_800_000_123,
            password_hash: Some("h".repeat(100)),
        });
        // A shorter write leaves nothing of the longer one behind.
        open.save(&SessionState {
            generation: 1_800_000_124,
            password_hash: None,
        });
        assert_eq!(open.load().generation, 1_800_000_124);
        let by_path = SessionStore::Path(path.clone());
        assert_eq!(by_path.load().generation, 1_800_000_124);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
