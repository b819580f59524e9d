//! The password, held only as an argon2 hash, and its checks: few at once,
//! and a verified credential remembered under a keyed hash for a few minutes
//! so that basic-auth scripts do not pay a full argon2 run per call.
//!
//! Each argon2 verification takes 19 MiB. Without a bound, a burst of wrong
//! passwords from many clients ran them all at once and took the agent past
//! 1 GB; now at most [`MAX_HASHING`] run, [`MAX_WAITING`] more wait, and the
//! rest are turned away at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sha2::{Digest, Sha256};

/// Verifications running at once.
pub const MAX_HASHING: usize = 2;
/// Verifications waiting for a slot; more are answered "busy".
pub const MAX_WAITING: usize = 8;
/// How long a verified credential is remembered.
pub const CACHE_TTL: Duration = Duration::from_secs(300);
/// Verified credentials remembered at most.
const CACHE_SIZE: usize = 4;

/// Compares in time that depends only on the lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What checking a credential found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// Right user and password.
    Right,
    /// Wrong user or password.
    Wrong,
    /// Too many checks are running or waiting; try again shortly.
    Busy,
}

/// The password hash, the check slots and the cache.
#[derive(Debug)]
pub struct Password {
    hash: RwLock<String>,
    slots: tokio::sync::Semaphore,
    waiting: AtomicUsize,
    cache_key: [u8; 32],
    verified: Mutex<Vec<([u8; 32], Instant)>>,
    after_hashing: Option<fn()>,
}

fn hash(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashes any password")
        .to_string()
}

impl Password {
    /// Hashes `password` (the plain text is not kept). `after_hashing` runs
    /// when the last running check ends: the agent returns the hashing
    /// memory to the system there.
    pub fn new(password: &str, after_hashing: Option<fn()>) -> Self {
        let mut cache_key = [0u8; 32];
        OsRng.fill_bytes(&mut cache_key);
        Password {
            hash: RwLock::new(hash(password)),
            slots: tokio::sync::Semaphore::new(MAX_HASHING),
            waiting: AtomicUsize::new(0),
            cache_key,
            verified: Mutex::new(Vec::new()),
            after_hashing,
        }
    }

    /// The current hash, in PHC form (salted argon2; never the password).
    pub fn phc(&self) -> String {
        self.hash.read().expect("lock").clone()
    }

    /// Replaces the password; forgets every remembered credential.
    pub fn set(&self, password: &str) {
        let h = hash(password);
        *self.hash.write().expect("lock") = h;
        self.verified.lock().expect("lock").clear();
    }

    fn keyed(&self, user: &str, password: &str) -> [u8; 32] {
        let mut d = Sha256::new();
        d.update(self.cache_key);
        d.update((user.len() as u64).to_le_bytes());
        d.update(user.as_bytes());
        d.update(password.as_bytes());
        d.finalize().into()
    }

    /// Whether this credential was verified within [`CACHE_TTL`].
    pub fn remembered(&self, user: &str, password: &str) -> bool {
        let k = self.keyed(user, password);
        let mut v = self.verified.lock().expect("lock");
        v.retain(|(_, at)| at.elapsed() < CACHE_TTL);
        v.iter().fold(false, |hit, (d, _)| hit | ct_eq(d, &k))
    }

    fn remember(&self, user: &str, password: &str) {
        let k = self.keyed(user, password);
        let mut v = self.verified.lock().expect("lock");
        v.retain(|(d, at)| at.elapsed() < CACHE_TTL && !ct_eq(d, &k));
        if v.len() >= CACHE_SIZE {
            v.remove(0);
        }
        v.push((k, Instant::now()));
    }

    /// The checks running now and those waiting for a turn.
    pub fn checks(&self) -> (usize, usize) {
        let in_flight = self.waiting.load(Ordering::SeqCst);
        (
            in_flight.min(MAX_HASHING),
            in_flight.saturating_sub(MAX_HASHING),
        )
    }

    /// Runs argon2 for `password`, at most [`MAX_HASHING`] at once.
    pub async fn check(
        self: &Arc<Self>,
        user: &str,
        password: &str,
        expected_user: &str,
    ) -> Checked {
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= MAX_HASHING + MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Checked::Busy;
        }
        let permit = self.slots.acquire().await;
        let this = Arc::clone(self);
        let pw = password.to_owned();
        let (ok, used) = tokio::task::spawn_blocking(move || {
            let h = this.hash.read().expect("lock").clone();
            let parsed = PasswordHash::new(&h).expect("own hash parses");
            let ok = Argon2::default()
                .verify_password(pw.as_bytes(), &parsed)
                .is_ok();
            (ok, h)
        })
        .await
        .unwrap_or((false, String::new()));
        drop(permit);
        if self.waiting.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Some(f) = self.after_hashing {
                f();
            }
        }
        self.conclude(&used, ok && user == expected_user, user, password)
    }

    /// A check's answer: right only when it was made against the password
    /// of now. A check in flight when the password was rotated answers
    /// wrong and remembers nothing, so the old password never outlives a
    /// rotation in the cache.
    fn conclude(&self, used_hash: &str, right: bool, user: &str, password: &str) -> Checked {
        let hash = self.hash.read().expect("lock");
        if right && *hash == used_hash {
            drop(hash);
            self.remember(user, password);
            Checked::Right
        } else {
            Checked::Wrong
        }
    }
}

/// Whether `password` matches `phc`, a hash this module made (one argon2 run).
pub fn matches(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_only_the_right_user_and_password_and_remembers_it() {
        let p = Arc::new(Password::new("s3cret-password", None));
        assert_eq!(
            p.check("fossa", "s3cret-password", "fossa").await,
            Checked::Right
        );
        assert!(p.remembered("fossa", "s3cret-password"));
        assert!(!p.remembered("fossa", "S3cret-password"));
        assert_eq!(
            p.check("fossa", "S3cret-password", "fossa").await,
            Checked::Wrong
        );
        assert_eq!(
            p.check("admin", "s3cret-password", "fossa").await,
            Checked::Wrong
        );
        assert!(!format!("{p:?}").contains("s3cret"));
        p.set("another-password");
        assert!(
            !p.remembered("fossa", "s3cret-password"),
            "a new password forgets the old"
        );
        assert_eq!(
            p.check("fossa", "s3cret-password", "fossa").await,
            Checked::Wrong
        );
    }

    #[test]
    fn a_check_made_against_the_old_password_is_not_remembered() {
        let p = Password::new("s3cret-password", None);
        let old = p.phc();
        // The rotation lands while argon2 still runs against the old hash.
        p.set("another-password");
        assert_eq!(
            p.conclude(&old, true, "fossa", "s3cret-password"),
            Checked::Wrong
        );
        assert!(!p.remembered("fossa", "s3cret-password"));
        let now = p.phc();
        assert_eq!(
            p.conclude(&now, true, "fossa", "another-password"),
            Checked::Right
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_burst_gets_busy_answers_past_the_bound() {
        let p = Arc::new(Password::new("s3cret-password", None));
        let mut all = Vec::new();
        for _ in 0..40 {
            let p = p.clone();
            all.push(tokio::spawn(async move {
                p.check("fossa", "wrong", "fossa").await
            }));
        }
        let mut busy = 0;
        for t in all {
            if t.await.unwrap() == Checked::Busy {
                busy += 1;
            }
        }
        assert!(busy >= 40 - MAX_HASHING - MAX_WAITING, "{busy} busy");
    }

    #[test]
    fn constant_time_equality() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
    }
}
