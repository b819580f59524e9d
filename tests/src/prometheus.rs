//! Debian's Prometheus tools against what the agent serves.

use std::io::Write;
use std::process::{Command, Stdio};

/// `promtool check metrics` on `text`: `Ok` when it has nothing to say,
/// else what it said.
pub fn check_metrics(text: &str) -> Result<(), String> {
    let promtool = "/usr/bin/promtool";
    assert!(
        std::path::Path::new(promtool).exists(),
        "{promtool} is missing: install the Debian package prometheus (tests/run.sh does)"
    );
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool's output");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(said)
    }
}

/// The value of the sample written exactly `series` (name and labels) in `text`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use fossa_web::model::*;

    /// Every family the agent can serve, with odd label values.
    fn everything() -> FleetSnapshot {
        let worker = |id: &str, provider: &str, health: Health| Worker {
            id: id.into(),
            status: "RUNNING".into(),
            capacity_provider: provider.into(),
            health,
            ..Default::default()
        };
        FleetSnapshot {
            stack: "odd \"stack\"\\".into(),
            workers: vec![
                worker("a", "FARGATE", Health::Ok),
                worker("b", "FARGATE_SPOT", Health::Garbage("<html>".into())),
            ],
            components: vec![Component {
                name: "nat".into(),
                ok: true,
                ..Default::default()
            }],
            cost: Some(Cost::default()),
            agent: Some(AgentInfo {
                version: "0.1.0\nx".into(),
                sha256: "ab".into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn promtool_accepts_every_family() {
        let mut families = fossa_web::metrics::families(&everything(), 100);
        families.extend(fossa_web::metrics::auth_families(
            &fossa_web::auth::AuthStats {
                wrong: 3,
                blocked: 1,
                busy: 0,
                checks_running: 2,
                checks_waiting: 1,
            },
        ));
        let mut h = fossa_web::metrics::Histogram::default();
        for secs in [0.0004, 0.02, 3.0, 12.0] {
            h.observe(secs);
        }
        families.push(
            fossa_web::metrics::Family::histogram(
                "fossa_http_request_duration_seconds",
                "How long the UI and API took to answer, by method and route.",
            )
            .observed(&[("method", "GET"), ("route", "/tasks/<id>")], &h),
        );
        let text = fossa_web::metrics::render(&families);
        super::check_metrics(&text).unwrap_or_else(|said| panic!("promtool: {said}\n{text}"));
    }

    #[test]
    fn promtool_is_a_real_check() {
        let counter_without_total = "# HELP fossa_x x\n# TYPE fossa_x counter\nfossa_x 1\n";
        assert!(super::check_metrics(counter_without_total).is_err());
    }
}
