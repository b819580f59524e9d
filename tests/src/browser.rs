//! Headless Chromium driven through chromedriver's W3C WebDriver API.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::{free_port, TempDir};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A browser session. Chromedriver runs in a process group of its own with
/// the Chromium processes it starts; on drop the whole group is killed, so no
/// browser outlives the test.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium that accepts the agent's self-signed certificate.
    pub async fn start() -> Browser {
        for p in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(std::path::Path::new(p).exists(), "{p} is missing: install the Debian packages chromium and chromium-driver (tests/run.sh does)");
        }
        let port = free_port();
        // Chromium's own temporary folders go in the profile's, which is
        // removed on drop: a killed browser leaves nothing in /tmp.
        let profile = TempDir::new("chromium");
        let tmp = profile.0.join("tmp");
        std::fs::create_dir_all(&tmp).expect("chromium's temp dir");
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .env("TMPDIR", &tmp)
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        crate::eventually(
            "chromedriver answering",
            Duration::from_secs(20),
            async || http.get(format!("{base}/status")).send().await,
        )
        .await;
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,1000",
                format!("--user-data-dir={}", profile.0.display())
            ]}
        }}});
        let v: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned();
        Browser {
            driver,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let req = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url).json(&body),
        };
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        v["value"].clone()
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url })).await;
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.call("GET", "/url", Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The page's HTML as the browser has it now.
    pub async fn source(&self) -> String {
        self.call("GET", "/source", Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The element matching `css`; panics with the page if there is none.
    pub async fn find(&self, css: &str) -> String {
        let v = self
            .call(
                "POST",
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        match v[ELEMENT].as_str() {
            Some(id) => id.to_owned(),
            None => panic!("no element {css}: {v}\n{}", self.source().await),
        }
    }

    /// Types into the element matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.call("POST", &format!("/element/{el}/clear"), json!({}))
            .await;
        self.call(
            "POST",
            &format!("/element/{el}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.call("POST", &format!("/element/{el}/click"), json!({}))
            .await;
    }

    /// Waits until the page source satisfies `ok`.
    pub async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        ok: impl Fn(&str) -> bool,
    ) -> String {
        crate::eventually(&format!("the page showing {what}"), within, async || {
            let s = self.source().await;
            if ok(&s) {
                Ok(s)
            } else {
                Err(format!("it shows:\n{s}"))
            }
        })
        .await
    }

    /// Where the element matching `css` is drawn: `(width, height)` in CSS pixels.
    pub async fn size_of(&self, css: &str) -> (f64, f64) {
        let el = self.find(css).await;
        let r = self
            .call("GET", &format!("/element/{el}/rect"), Value::Null)
            .await;
        (
            r["width"].as_f64().unwrap_or_default(),
            r["height"].as_f64().unwrap_or_default(),
        )
    }

    /// Saves a PNG screenshot of the element matching `css` alone; returns its size in bytes.
    pub async fn screenshot_of(&self, css: &str, path: &std::path::Path) -> usize {
        let el = self.find(css).await;
        let b64 = self
            .call("GET", &format!("/element/{el}/screenshot"), Value::Null)
            .await;
        let bytes =
            aws_smithy_types::base64::decode(b64.as_str().unwrap_or_default()).unwrap_or_default();
        std::fs::write(path, &bytes).unwrap();
        bytes.len()
    }

    /// Saves a PNG screenshot.
    pub async fn screenshot(&self, path: &std::path::Path) {
        let b64 = self.call("GET", "/screenshot", Value::Null).await;
        let bytes =
            aws_smithy_types::base64::decode(b64.as_str().unwrap_or_default()).unwrap_or_default();
        std::fs::write(path, bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The group id is the driver's pid (process_group(0)).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
