//! The configuration duty: notices, within its period, a new stack config or
//! UI password in SSM (a re-run of `launch`, `fossa-bootstrap scale`,
//! `fossa-bootstrap password --rotate`) and applies it without a signal. New
//! settings reach every duty at once over the settings channel (each applies
//! what concerns it); a new password reaches the UI, which ends every session.
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

/// See the module docs.
pub struct ConfigDuty {
    path: PathBuf,
    settings: Arc<watch::Sender<Arc<Settings>>>,
    password: watch::Sender<String>,
    password_version: Option<i64>,
}

impl ConfigDuty {
    /// Reloads `path` into `settings` when the stack config changes, and
    /// sends a rotated UI password on `password`.
    pub fn new(
        path: PathBuf,
        settings: Arc<watch::Sender<Arc<Settings>>>,
        password: watch::Sender<String>,
    ) -> Self {
        ConfigDuty {
            path,
            settings,
            password,
            password_version: None,
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
        if version != s.config_version {
            let new = load(&self.path).await?;
            said.push(format!(
                "applied configuration version {} (was {})",
                new.config_version, s.config_version
            ));
            self.settings.send_replace(Arc::new(new));
        }
        let name = s.toml.stack.ssm_parameter(ssm::UI_PASSWORD);
        let ssm::Parameter {
            value,
            version: pw_version,
        } = ssm::get(ssm_c, &name, true).await?;
        match self.password_version {
            Some(seen) if seen != pw_version && !value.is_empty() => {
                self.password.send_replace(value);
                said.push(format!(
                    "the UI password was rotated (version {pw_version}): every session ends"
                ));
            }
            _ => {}
        }
        self.password_version = Some(pw_version);
        if said.is_empty() {
            said.push(format!(
                "configuration version {version} and UI password version {pw_version} are current"
            ));
        }
        Ok(Outcome::done(said.join("; "))
            .with_detail(true, format!("SSM checked every {} s", PERIOD.as_secs())))
    }
}
