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

/// The shipped Prometheus files (scrape config, alert rules and their
/// tests, the Grafana dashboard), `docs/prometheus/`.
pub fn shipped(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/prometheus")
        .join(name)
}

/// A real Prometheus (Debian's package) scraping one gateway every second
/// with the shipped scrape config, its three marked places filled in.
pub struct Prometheus {
    _process: crate::process::Process,
    /// `http://127.0.0.1:PORT`, its API.
    pub url: String,
    _dir: crate::TempDir,
}

impl Prometheus {
    /// Scrapes `target` (`host:port`) with the token in `token_file`,
    /// trusting the certificate in `ca_file`.
    pub fn start(target: &str, token_file: &std::path::Path, ca_file: &std::path::Path) -> Self {
        let bin = "/usr/bin/prometheus";
        assert!(
            std::path::Path::new(bin).exists(),
            "{bin} is missing: install the Debian package prometheus (tests/run.sh does)"
        );
        let dir = crate::TempDir::new("prometheus");
        let config = std::fs::read_to_string(shipped("prometheus.yml")).expect("the scrape config");
        let filled: Vec<String> = config
            .lines()
            .map(|l| {
                let (head, _) = l.split_once(": ").unwrap_or((l, ""));
                if l.ends_with("# TOKEN_FILE") {
                    format!("{head}: {}", token_file.display())
                } else if l.ends_with("# CA_FILE") {
                    format!("{head}: {}", ca_file.display())
                } else if l.ends_with("# TARGET") {
                    format!("{head}: [\"{target}\"]")
                } else if l.trim_start().starts_with("scrape_interval:") {
                    format!("{head}: 1s")
                } else {
                    l.to_owned()
                }
            })
            .collect();
        let marked = ["# TOKEN_FILE", "# CA_FILE", "# TARGET"];
        let n = config
            .lines()
            .filter(|l| marked.iter().any(|m| l.ends_with(m)))
            .count();
        assert_eq!(n, 3, "the three marked places of the shipped config");
        std::fs::write(dir.0.join("prometheus.yml"), filled.join("\n")).unwrap();
        std::fs::copy(shipped("alerts.yml"), dir.0.join("alerts.yml")).unwrap();
        let port = crate::free_port();
        let process = crate::process::Process::spawn(
            Command::new(bin)
                .arg(format!(
                    "--config.file={}",
                    dir.0.join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.0.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}")),
            dir.0.join("stdout"),
            dir.0.join("stderr"),
        );
        Prometheus {
            _process: process,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// An instant query's one value, or what came instead.
    pub async fn query(&self, promql: &str) -> Result<f64, String> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                b => format!("%{b:02X}"),
            })
            .collect();
        let v: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query?query={encoded}", self.url))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| v.to_string())
    }

    /// The scrape's health as Prometheus reports it (`up`, the last error).
    pub async fn target(&self) -> String {
        let v: serde_json::Value = match reqwest::get(format!("{}/api/v1/targets", self.url)).await
        {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(e) => return e.to_string(),
        };
        let errors: Vec<String> = self
            ._process
            .log()
            .lines()
            .filter(|l| l.contains("level=error"))
            .map(str::to_owned)
            .collect();
        format!("{} {errors:?}", v["data"]["activeTargets"])
    }
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
            broker_waiting: Some(3),
            nat: Some(fossa_web::nat::NatFigures {
                conntrack: Some(10),
                conntrack_max: Some(262_144),
                allowances: [("pps_allowance_exceeded".to_owned(), 2)].into(),
                ..Default::default()
            }),
            agent: Some(AgentInfo {
                version: "0.1.0\nx".into(),
                sha256: "ab".into(),
                replaced: None,
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

    use std::process::Command;

    #[test]
    fn the_shipped_alert_rules_pass_their_tests() {
        for args in [
            vec!["check", "rules", "alerts.yml"],
            vec!["test", "rules", "alerts.test.yml"],
        ] {
            let out = Command::new("/usr/bin/promtool")
                .args(&args)
                .current_dir(super::shipped(""))
                .output()
                .expect("promtool (the Debian package prometheus)");
            assert!(
                out.status.success(),
                "promtool {args:?}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn the_dashboard_asks_only_for_series_the_agent_serves() {
        let mut families = fossa_web::metrics::families(&everything(), 100);
        families.extend(fossa_web::metrics::auth_families(
            &fossa_web::auth::AuthStats {
                wrong: 0,
                blocked: 0,
                busy: 0,
                checks_running: 0,
                checks_waiting: 0,
            },
        ));
        families.push(fossa_web::metrics::Family::histogram(
            "fossa_http_request_duration_seconds",
            "x",
        ));
        let served: std::collections::HashSet<&str> = families.iter().map(|f| f.name).collect();
        let text = std::fs::read_to_string(super::shipped("grafana-dashboard.json")).unwrap();
        let dashboard: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let mut asked = 0;
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if !word.starts_with("fossa_") {
                        continue;
                    }
                    let family = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| word.strip_suffix(s))
                        .filter(|f| served.contains(f))
                        .unwrap_or(word);
                    assert!(served.contains(family), "{word} in {expr}");
                    asked += 1;
                }
            }
        }
        assert!(asked >= 10, "{asked}");
        let rules = std::fs::read_to_string(super::shipped("alerts.yml")).unwrap();
        for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("fossa_") {
                assert!(served.contains(word), "alerts.yml asks for {word}");
            }
        }
    }
}
