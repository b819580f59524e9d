//! Bad input to `fossa-agent` gets one clear line naming the problem and the fix.

use std::process::Command;

use fossa_tests::{bin, Run, TempDir};

#[test]
fn bad_config_files_and_flags_are_explained() {
    let dir = TempDir::new("agentcli");
    let file = |name: &str, text: &str| {
        let p = dir.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let unknown = file(
        "unknown.toml",
        "stack = \"dev\"\nregion = \"eu-west-2\"\nlisten_port = 443\n",
    );
    let bad_listen = file(
        "listen.toml",
        "stack = \"dev\"\nregion = \"eu-west-2\"\nlisten = \"everywhere\"\n",
    );
    let bad_stack = file(
        "stack.toml",
        "stack = \"Dev Stack\"\nregion = \"eu-west-2\"\n",
    );
    let no_region = file("region.toml", "stack = \"dev\"\n");
    let bad_region = file("badregion.toml", "stack = \"dev\"\nregion = \"moon-1\"\n");
    let bad_duty = file(
        "duty.toml",
        "stack = \"dev\"\nregion = \"eu-west-2\"\nduties = [\"nat\", \"coffee\"]\n",
    );
    let not_toml = file("garbage.toml", "this is = = not toml\n");
    let no_history = file(
        "history0.toml",
        "stack = \"dev\"\nregion = \"eu-west-2\"\n[history]\nmax_tasks = 0\n",
    );
    let history_key = file(
        "historykey.toml",
        "stack = \"dev\"\nregion = \"eu-west-2\"\n[history]\nkeep_forever = true\n",
    );
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "run".into(),
                "--config".into(),
                "/nonexistent/agent.toml".into(),
            ],
            "cannot read config file /nonexistent/agent.toml",
        ),
        (
            vec!["run".into(), "--config".into(), unknown],
            "listen_port",
        ),
        (vec!["run".into(), "--config".into(), bad_listen], "listen"),
        (
            vec!["run".into(), "--config".into(), bad_stack],
            "invalid stack name",
        ),
        (vec!["run".into(), "--config".into(), no_region], "region"),
        (
            vec!["run".into(), "--config".into(), bad_region],
            "unknown AWS region",
        ),
        (vec!["run".into(), "--config".into(), bad_duty], "coffee"),
        (vec!["run".into(), "--config".into(), not_toml], "invalid"),
        (
            vec!["run".into(), "--config".into(), no_history],
            "[history] max_tasks must be at least 1",
        ),
        (
            vec!["run".into(), "--config".into(), history_key],
            "keep_forever",
        ),
        (
            vec!["local".into(), "--queue-max".into(), "-1".into()],
            "--queue-max",
        ),
        (
            vec![
                "local".into(),
                "--min-workers".into(),
                "5".into(),
                "--max-workers".into(),
                "2".into(),
            ],
            "--min-workers 5 is above --max-workers 2",
        ),
        (
            vec!["local".into(), "--max-workers".into(), "100".into()],
            "64 or fewer",
        ),
        (
            vec!["local".into(), "--max-workers".into(), "-1".into()],
            "--max-workers",
        ),
        (
            vec!["local".into(), "--min-workers".into(), "1".into()],
            "--max-workers",
        ),
        (
            vec![
                "local".into(),
                "--broker-url".into(),
                "amqp://fossa:hunter2-broker@127.0.0.1:5672/%2F".into(),
            ],
            "set FOSSA_BROKER_URL",
        ),
        (
            vec![
                "nat".into(),
                "apply".into(),
                "--private-cidr".into(),
                "192.168.2.0/99".into(),
            ],
            "--private-cidr",
        ),
        (vec!["nat".into(), "sideways".into()], "apply"),
        (
            vec![
                "build".into(),
                "--config".into(),
                "/nonexistent/agent.toml".into(),
            ],
            "cannot read config file",
        ),
    ];
    for (args, needle) in cases {
        let r = Run::of(
            Command::new(bin("fossa-agent"))
                .args(&args)
                .env("AWS_EC2_METADATA_DISABLED", "true"),
        );
        assert_ne!(r.code, 0, "{args:?} succeeded");
        assert!(
            r.stderr.contains(needle),
            "{args:?}: expected {needle:?} in:\n{}",
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{args:?}: {}", r.stderr);
        assert!(
            !r.stderr.contains("hunter2-broker"),
            "never echoed: {}",
            r.stderr
        );
        let errors = r.stderr.lines().filter(|l| l.starts_with("error")).count();
        assert!(errors <= 1, "{args:?}: one error line, got:\n{}", r.stderr);
    }
}

/// A host without CA certificates: the AWS SDK's TLS set-up would panic on
/// the first client; both binaries say what to install instead. The host's
/// bundles are hidden in a mount namespace of the test's own.
#[test]
fn no_ca_certificates_is_one_clear_line_not_a_panic() {
    let dir = TempDir::new("nocerts");
    let config = dir.0.join("agent.toml");
    std::fs::write(
        &config,
        "stack = \"dev\"\nregion = \"eu-west-2\"\nendpoint_url = \"http://127.0.0.1:9\"\nduties = [\"nat\"]\n",
    )
    .unwrap();
    let hide =
        "for d in /etc/ssl /etc/pki; do [ -d $d ] && mount -t tmpfs none $d; done; exec \"$@\"";
    for (what, args) in [
        (
            "fossa-agent",
            vec![
                bin("fossa-agent").display().to_string(),
                "nat".into(),
                "check".into(),
                "--config".into(),
                config.display().to_string(),
            ],
        ),
        (
            "fossa-bootstrap",
            vec![
                bin("fossa-bootstrap").display().to_string(),
                "status".into(),
                "--region".into(),
                "eu-west-2".into(),
            ],
        ),
    ] {
        let r = Run::of(
            Command::new("unshare")
                .args([
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    hide,
                    "sh",
                ])
                .args(&args)
                .env_remove("SSL_CERT_FILE")
                .env_remove("SSL_CERT_DIR")
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test"),
        );
        assert_ne!(r.code, 0, "{what}");
        assert!(
            r.stderr.contains("no CA certificates found") && r.stderr.contains("ca-certificates"),
            "{what}: {}",
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{what}: {}", r.stderr);
    }
}
