//! Looking for secrets where they must never be: every page and API reply the
//! agent serves (found by following its links), logs, user-data, unit files
//! and the command line of every process on the machine.

use std::collections::{BTreeSet, VecDeque};

/// Text from one place, named for the failure message.
#[derive(Debug, Clone)]
pub struct Place {
    /// Where it came from, e.g. `GET /tasks` or `agent log`.
    pub name: String,
    /// What it holds.
    pub text: String,
}

impl Place {
    /// A place from a name and its text.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Place {
        Place {
            name: name.into(),
            text: text.into(),
        }
    }
}

/// The API documents the pages do not link to.
const API: [&str; 5] = [
    "/api/v1/overview",
    "/api/v1/workers",
    "/api/v1/tasks",
    "/api/v1/events",
    "/metrics",
];

fn links(html: &str) -> Vec<String> {
    html.split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|h| h.replace("&amp;", "&"))
        .map(|h| h.split('#').next().unwrap_or_default().to_owned())
        .filter(|h| h.starts_with('/') && !h.starts_with("//") && h != "/logout")
        .collect()
}

/// Every page reachable from `/` by same-origin links (with basic auth), the
/// login page without it, and the API documents: at most `limit` requests.
pub async fn crawl(base: &str, password: &str, limit: usize) -> Vec<Place> {
    let http = crate::agent_client();
    let mut out = Vec::new();
    let login = http
        .get(format!("{base}/login"))
        .send()
        .await
        .expect("GET /login");
    out.push(Place::new(
        "GET /login (no auth)",
        login.text().await.unwrap_or_default(),
    ));
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut queue: VecDeque<String> = ["/", "/tasks", "/events"]
        .into_iter()
        .chain(API)
        .map(str::to_owned)
        .collect();
    while let Some(path) = queue.pop_front() {
        if out.len() >= limit || !seen.insert(path.clone()) {
            continue;
        }
        let resp = http
            .get(format!("{base}{path}"))
            .basic_auth("fossa", Some(password))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        assert!(status < 500, "GET {path} answered {status}: {text}");
        queue.extend(links(&text));
        out.push(Place::new(format!("GET {path}"), text));
    }
    out
}

/// The command lines of every process on this machine.
pub fn every_command_line() -> Place {
    let mut text = String::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            text.push_str(&String::from_utf8_lossy(&raw).replace('\0', " "));
            text.push('\n');
        }
    }
    Place::new("the command lines of every process", text)
}

/// `KEY=value` from a process's environment (root can read any).
pub fn environ_of(pid: u32, key: &str) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    raw.split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_owned))
}

/// The secret part of `scheme://user:secret@host…`.
pub fn url_password(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let creds = rest.split_once('@').map_or("", |(c, _)| c);
    creds.split_once(':').map_or("", |(_, p)| p).to_owned()
}

/// Fails naming the secret and the place when any secret occurs in any place.
pub fn assert_absent(secrets: &[(&str, &str)], places: &[Place]) {
    for (what, secret) in secrets {
        assert!(
            secret.len() >= 8,
            "{what} is too short to look for ({} chars)",
            secret.len()
        );
        for p in places {
            assert!(
                !p.text.contains(secret),
                "the {what} appears in {} ({} bytes)",
                p.name,
                p.text.len()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_same_origin_paths() {
        let html = r#"<a href="/tasks/a:1::q">x</a><a href="https://elsewhere/">y</a>
            <a href="/logout">z</a><a href="/tasks?x=1&amp;y=2#top">w</a><a href="//cdn/x">v</a>"#;
        assert_eq!(links(html), ["/tasks/a:1::q", "/tasks?x=1&y=2"]);
    }

    #[test]
    fn url_passwords_are_found() {
        assert_eq!(
            url_password("amqp://fossa:s3cr3t@10.0.0.1:5672/%2F"),
            "s3cr3t"
        );
        assert_eq!(url_password("amqp://host"), "");
    }
}
