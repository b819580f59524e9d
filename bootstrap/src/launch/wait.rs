//! `launch` following the gateway's first boot (or a re-run's changes):
//! `/healthz` at the UI's address, then the agent's overviews read with
//! [`super::first_boot::Follow`], until every duty is well and every wanted
//! worker answers.

use std::time::Duration;

use fossa_contract::ssm;

use super::{first_boot, Launcher};
use crate::progress::Outcome;
use crate::{Error, Result};

pub(super) async fn wait_for_agent(
    l: &mut Launcher<'_>,
    instance: &str,
    addr: &str,
    agent_sha: &str,
    follow_for: Duration,
) -> Result<()> {
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| Error::Unexpected(e.to_string()))?;
    let deadline = std::time::Instant::now() + follow_for;
    let took = || format!("{} s", follow_for.as_secs());
    loop {
        l.p.working(&format!(
            "waiting for the agent at https://{addr}/healthz (first boot takes a few minutes)"
        ));
        if let Ok(r) = http.get(format!("https://{addr}/healthz")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if std::time::Instant::now() > deadline {
            return Err(Error::Unexpected(format!(
                "the agent did not answer within {}; see `aws ssm start-session --target {instance}` then `journalctl -u fossa-agent` and /var/log/fossa-user-data.log. Re-run launch to keep waiting",
                took()
            )));
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    l.p.done(Outcome::Ready, "agent", &format!("https://{addr}/healthz"));
    let fingerprint = follow(l, addr, deadline, agent_sha, &took()).await?;
    l.p.note(&format!("TLS certificate SHA-256 fingerprint: {fingerprint} (your browser will show this self-signed certificate)"));
    Ok(())
}

/// Follows the agent's duties and workers until all are done, printing each
/// change; returns the certificate fingerprint it was reached with. On a
/// timeout, the error names the duties that are not done with their last line.
async fn follow(
    l: &mut Launcher<'_>,
    addr: &str,
    deadline: std::time::Instant,
    agent_sha: &str,
    took: &str,
) -> Result<String> {
    let mut seen = first_boot::Follow::new(Some(agent_sha.to_owned()));
    let mut last_error = None;
    loop {
        let read = |key: &'static str, secret: bool| {
            crate::aws::parameter_value(&l.c.ssm, l.stack.ssm_parameter(key), secret)
        };
        if let (Some(fp), Some(pw)) = (
            read(ssm::TLS_FINGERPRINT, false).await,
            read(ssm::UI_PASSWORD, true).await,
        ) {
            match crate::agent_api::overview(addr, &fp, &pw).await {
                Ok(o) => {
                    let s = seen.observe(&o);
                    for line in &s.lines {
                        l.p.note(&format!("  {line}"));
                    }
                    if s.done {
                        l.p.done(Outcome::Ready, "workers", &s.workers);
                        return Ok(fp);
                    }
                    l.p.working(&s.workers);
                }
                Err(e) => last_error = Some(fossa_contract::aws::chain(&e)),
            }
        } else {
            l.p.working("waiting for the agent to publish its certificate fingerprint in SSM");
        }
        if std::time::Instant::now() > deadline {
            let failing = seen.failing();
            let why = if !failing.is_empty() {
                failing.join("; ")
            } else if let Some(e) = last_error {
                e
            } else {
                "the agent never published its certificate fingerprint".into()
            };
            return Err(Error::Unexpected(format!(
                "the stack did not come up within {took}: {why}. `fossa-bootstrap status --stack {}` shows the same; re-run launch to keep following it",
                l.stack
            )));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
