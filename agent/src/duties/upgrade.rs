//! The upgrade duty: the agent runs the binary `launch` uploaded. Every 15 s
//! it compares SSM `agent-sha256` with its own binary's SHA-256; when they
//! differ it downloads `s3://<bucket>/agent/fossa-agent` with its role,
//! checks it (SHA-256, ELF, architecture, `--version`, and not older than
//! itself unless `launch --allow-downgrade`), stages it in the
//! state directory, makes it `current` (the old one stays as `previous`) and
//! stops gracefully; systemd starts the launcher again, which execs it
//! (see [`crate::host::upgrade`]). NAT rules stay in the kernel meanwhile, so
//! the workers' egress never drops. A binary that is refused, or that was
//! rolled back because it never became ready, is not tried again until
//! `agent-sha256` names another; the duty's line says why.

use std::path::PathBuf;

use async_trait::async_trait;
use fossa_contract::aws::AwsResultExt;
use fossa_contract::fault::{exit_at, Point};
use fossa_contract::names::AGENT_OBJECT_KEY;
use fossa_contract::ssm;

use super::{Duty, DutyError, Next, Outcome};
use crate::host::upgrade::{self, Layout, UpgradeError};
use crate::settings::Settings;

impl From<UpgradeError> for DutyError {
    fn from(e: UpgradeError) -> Self {
        DutyError::Upgrade(e)
    }
}

/// See the module docs.
pub struct UpgradeDuty {
    /// The SHA-256 of the running binary.
    running: String,
    /// A binary refused before, and why, under which downgrade permission:
    /// not downloaded again while that permission stays.
    refused: Option<(String, String, bool)>,
}

impl UpgradeDuty {
    /// The duty for the agent whose binary hashes to `running`.
    pub fn new(running: String) -> Self {
        UpgradeDuty {
            running,
            refused: None,
        }
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

#[async_trait]
impl Duty<Settings> for UpgradeDuty {
    async fn reconcile(&mut self, s: &Settings) -> Result<Outcome, DutyError> {
        let name = s.stack.stack.ssm_parameter(ssm::AGENT_SHA256);
        let wanted = ssm::get(&s.clients.ssm, &name, false)
            .await?
            .value
            .trim()
            .to_lowercase();
        let layout = Layout::new(&s.toml.state_dir);
        let version = env!("CARGO_PKG_VERSION");
        if wanted.is_empty() || wanted == self.running {
            return Ok(Outcome::done(format!(
                "fossa-agent {version} ({}) runs, as agent-sha256 wants",
                short(&self.running)
            )));
        }
        if let Some((sha, why)) = layout.rolled_back().filter(|(sha, _)| *sha == wanted) {
            return Ok(unwell(format!(
                "agent-sha256 wants {}, which was rolled back: {why}; fossa-agent {version} ({}) runs",
                short(&sha),
                short(&self.running)
            )));
        }
        let allowed = s.stack.allow_agent_downgrade;
        let refused = self.refused.as_ref();
        if let Some((_, why, _)) = refused.filter(|(sha, _, a)| *sha == wanted && *a == allowed) {
            return Ok(self.refusal(&wanted, why));
        }
        let bucket = &s.stack.bucket;
        let object = s
            .clients
            .s3
            .get_object()
            .bucket(bucket)
            .expected_bucket_owner(&s.stack.account_id)
            .key(AGENT_OBJECT_KEY)
            .customize()
            .config_override(fossa_contract::aws::transfer_timeouts())
            .send()
            .await
            .aws("s3:GetObject", format!("s3://{bucket}/{AGENT_OBJECT_KEY}"))?;
        let bytes = fossa_contract::aws::read_body(object.body)
            .await
            .map_err(|e| {
                DutyError::Upgrade(UpgradeError::Io {
                    path: PathBuf::from(format!("s3://{bucket}/{AGENT_OBJECT_KEY}")),
                    source: std::io::Error::other(e),
                })
            })?;
        let checked = match upgrade::verify(&bytes, &wanted) {
            Ok(()) => {
                let staged = layout.stage(&wanted, &bytes)?;
                match upgrade::runs(&staged).await {
                    Ok(said) => {
                        upgrade::not_older(version, &said, allowed).map(|()| (staged, said))
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        let (staged, said) = match checked {
            Ok(ok) => ok,
            Err(e) => {
                let why = fossa_contract::aws::chain(&e);
                let _ = std::fs::remove_file(layout.binary(&wanted));
                let outcome = self.refusal(&wanted, &why);
                // Remembered: the next checks say it again without a download.
                self.refused = Some((wanted, why, allowed));
                return Ok(outcome);
            }
        };
        exit_at(Point::UpgradeStaged);
        let me = std::env::current_exe().map_err(|source| UpgradeError::Io {
            path: PathBuf::from("/proc/self/exe"),
            source,
        })?;
        layout.swap(&wanted, &staged, &me)?;
        exit_at(Point::UpgradeSwapped);
        // A graceful stop; systemd (Restart=always) starts the launcher, which execs the new binary.
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGTERM);
        Ok(Outcome {
            summary: format!(
                "upgrading fossa-agent {version} ({}) to {said} ({}): restarting into it",
                short(&self.running),
                short(&wanted)
            ),
            detail: None,
            healthy: true,
            next: Next::Change,
        })
    }
}

impl UpgradeDuty {
    /// The line for a binary this agent will not run.
    fn refusal(&self, wanted: &str, why: &str) -> Outcome {
        unwell(format!(
            "refused the agent binary {}: {why}; fossa-agent {} ({}) keeps running",
            short(wanted),
            env!("CARGO_PKG_VERSION"),
            short(&self.running)
        ))
    }
}

fn unwell(summary: String) -> Outcome {
    let mut o = Outcome::done(summary);
    o.healthy = false;
    o
}
