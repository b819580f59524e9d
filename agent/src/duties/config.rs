//! The configuration duty: notices, within its period, a new stack config or
//! UI password in SSM (a re-run of `launch`, `fossa-bootstrap scale`,
//! `fossa-bootstrap password --rotate`) and applies it without a signal. New
//! settings reach every duty at once over the settings channel (each applies
//! what concerns it); a new password reaches the UI, which ends every
//! session, and so does a new scraper's token.
//! It compares parameter versions, so a check is two small reads.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fossa_contract::ssm;
use tokio::sync::watch;

use super::{Duty, DutyError, Outcome};
use crate::settings::{load, Settings};

/// How often SSM is asked for new versions.
pub const PERIOD: Duration = Duration::from_secs(fossa_contract::limits::CONFIG_CHECK_SECS);

/// A secret the UI holds, followed in SSM: a new version is sent to it.
pub struct Followed {
    /// The parameter's key ([`ssm::UI_PASSWORD`], [`ssm::METRICS_TOKEN`]).
    pub key: &'static str,
    /// Where a new value goes.
    pub tx: watch::Sender<String>,
    /// The version the UI started with (`None`: not read; a missing
    /// parameter is followed once it appears).
    pub version: Option<i64>,
}

/// See the module docs.
pub struct ConfigDuty {
    path: PathBuf,
    settings: Arc<watch::Sender<Arc<Settings>>>,
    secrets: Vec<Followed>,
}

impl ConfigDuty {
    /// Reloads `path` into `settings` when the stack config changes, and
    /// sends each rotated secret of `secrets` to the UI.
    pub fn new(
        path: PathBuf,
        settings: Arc<watch::Sender<Arc<Settings>>>,
        secrets: Vec<Followed>,
    ) -> Self {
        ConfigDuty {
            path,
            settings,
            secrets,
        }
    }
}

#[async_trait]
impl Duty<Settings> for ConfigDuty {
    async fn reconcile(&mut self, s: &Settings) -> Result<Outcome, DutyError> {
        let ssm_c = &s.clients.ssm;
        let mut said = Vec::new();
        let name = s.toml.stack.ssm_parameter(ssm::CONFIG);
        let version = ssm::get(ssm_c, &name, false).await?.version;
        let mut trouble = None;
        if version != s.config_version || s.config_trouble.is_some() {
            let new = load(&self.path).await?;
            match &new.config_trouble {
                // SSM's config is malformed: the running one stays, said
                // (the secrets below are still followed).
                Some(why) if new.config_version == s.config_version => {
                    said.push(format!(
                        "running on configuration version {}",
                        s.config_version
                    ));
                    trouble = Some(why.clone());
                }
                _ => {
                    said.push(format!(
                        "applied configuration version {} (was {})",
                        new.config_version, s.config_version
                    ));
                    self.settings.send_replace(Arc::new(new));
                }
            }
        }
        let mut versions = Vec::new();
        for f in &mut self.secrets {
            let name = s.toml.stack.ssm_parameter(f.key);
            // A stack launched before the key existed has no such parameter.
            let Some(ssm::Parameter { value, version }) = ssm::read(ssm_c, &name, true).await?
            else {
                continue;
            };
            // A version the UI did not start with, even the first one seen:
            // a rotation between the UI's start and this check is not lost.
            if f.version != Some(version) && !value.is_empty() {
                f.tx.send_replace(value);
                said.push(match f.key {
                    ssm::UI_PASSWORD => format!(
                        "the UI password was rotated (version {version}): every session ends"
                    ),
                    key => format!("{key} was rotated (version {version})"),
                });
            }
            f.version = Some(version);
            versions.push(format!("{} version {version}", f.key));
        }
        if said.is_empty() {
            said.push(format!(
                "configuration version {}, {} are current",
                s.config_version,
                versions.join(", ")
            ));
        }
        let done = Outcome::done(said.join("; "));
        Ok(match trouble {
            Some(why) => done.with_detail(false, why),
            None => done.with_detail(true, format!("SSM checked every {} s", PERIOD.as_secs())),
        })
    }
}
