//! The IAM documents `fossa-bootstrap plan --output json` prints, linted by
//! parliament (PyPI) with its community auditors, the way AWS's own service
//! reference reads them: the emulator enforces no IAM, so this is where a
//! grant AWS would refuse shows. Any finding above LOW fails the test unless
//! `tests/support/parliament-allow.txt` accepts it with a reason.

use std::process::Command;

use fossa_tests::moto::Moto;
use fossa_tests::{bin, repo_root, venv_bin, Run};
use serde_json::Value;

/// One accepted finding: parliament's issue code and the action it names.
struct Allowed {
    issue: String,
    action: String,
}

fn allow_list() -> Vec<Allowed> {
    let path = repo_root().join("tests/support/parliament-allow.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let (issue, action, reason) = (parts.next(), parts.next(), parts.next());
            assert!(
                reason.is_some_and(|r| r.len() > 20),
                "{}: every entry needs ISSUE ACTION and a reason: {l}",
                path.display()
            );
            Allowed {
                issue: issue.unwrap().to_owned(),
                action: action.unwrap().to_ascii_lowercase(),
            }
        })
        .collect()
}

/// Parliament's findings for one document, as JSON objects.
fn parliament(policy: &Value) -> Vec<Value> {
    let r = Run::of(Command::new(venv_bin("parliament")).args([
        "--string",
        &policy.to_string(),
        "--json",
        "--minimum_severity",
        "INFO",
        "--include-community-auditors",
    ]));
    assert!(
        r.code == 0 || r.code == 1,
        "parliament failed: {}{}",
        r.stdout,
        r.stderr
    );
    r.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A trust policy is a resource policy on its role: parliament lints
/// identity policies, so the role's ARN is given as the Resource it guards.
fn as_lintable(kind: &str, name: &str, policy: &Value, account: &str) -> Value {
    let mut p = policy.clone();
    if kind == "iam-role" {
        for s in p["Statement"].as_array_mut().unwrap() {
            s["Resource"] = format!("arn:aws:iam::{account}:role/{name}").into();
        }
    }
    p
}

#[test]
fn parliament_finds_nothing_above_low_in_any_document_plan_prints() {
    let moto = Moto::start();
    let models = fossa_tests::TempDir::new("iam-models");
    let r = Run::of(
        Command::new(bin("fossa-bootstrap"))
            .args(["plan", "--output", "json", "--stack", "lint"])
            .args([
                "--allow-cidr",
                "203.0.113.7/32",
                "--endpoint-url",
                &moto.url,
            ])
            .arg("--models")
            .arg(&models.0)
            .envs(moto.env()),
    )
    .ok();
    let plan: Value = serde_json::from_str(&r.stdout).unwrap();
    let allowed = allow_list();
    let (mut documents, mut counts, mut refused) = (0, std::collections::BTreeMap::new(), vec![]);
    for res in plan.as_array().unwrap() {
        let Some(policy) = res.get("policy") else {
            continue;
        };
        let (kind, name) = (res["kind"].as_str().unwrap(), res["name"].as_str().unwrap());
        documents += 1;
        for f in parliament(&as_lintable(kind, name, policy, "123456789012")) {
            let severity = f["severity"].as_str().unwrap_or("?").to_owned();
            *counts.entry(severity.clone()).or_insert(0) += 1;
            if matches!(severity.as_str(), "INFO" | "LOW") {
                continue;
            }
            let issue = f["issue"].as_str().unwrap_or_default();
            let actions: Vec<String> = f["location"]["actions"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str())
                        .map(str::to_ascii_lowercase)
                        .collect()
                })
                .unwrap_or_default();
            let accepted = !actions.is_empty()
                && actions
                    .iter()
                    .all(|a| allowed.iter().any(|x| x.issue == issue && &x.action == a));
            if !accepted {
                refused.push(format!("{kind} {name}: {f}"));
            }
        }
    }
    println!("figures: parliament over {documents} documents: {counts:?}");
    assert!(documents >= 6, "plan prints every IAM document: {plan:#}");
    assert!(
        refused.is_empty(),
        "parliament findings above LOW that tests/support/parliament-allow.txt does not accept:\n{}",
        refused.join("\n")
    );
}

#[test]
fn plan_prints_every_role_document_and_changes_nothing() {
    let moto = Moto::start();
    let r = Run::of(
        Command::new(bin("fossa-bootstrap"))
            .args(["plan", "--stack", "look", "--allow-cidr", "203.0.113.7/32"])
            .args(["--endpoint-url", &moto.url])
            .envs(moto.env()),
    )
    .ok();
    for needle in [
        "Nothing is changed",
        "fossa-look-gateway",
        "trust policy",
        "inline policy",
        "aws:SourceAccount",
        "ssmmessages:OpenDataChannel",
        "aws:SecureTransport",
        "hop limit 1",
    ] {
        assert!(r.stdout.contains(needle), "{needle}:\n{}", r.stdout);
    }
    assert!(
        !r.stdout.contains("AmazonSSMManagedInstanceCore"),
        "no managed policy that reads every parameter"
    );
    // Nothing was made: the stack's status finds no resource.
    let status = Run::of(
        Command::new(bin("fossa-bootstrap"))
            .args(["status", "--stack", "look", "--output", "json"])
            .args(["--endpoint-url", &moto.url])
            .envs(moto.env()),
    );
    assert!(
        !status.stdout.contains("vpc-"),
        "plan made something: {}",
        status.stdout
    );
    // Bad flags fail before any AWS call, naming the flag.
    let bad = Run::of(
        Command::new(bin("fossa-bootstrap"))
            .args(["plan", "--stack", "look", "--allow-cidr", "0.0.0.0/0"])
            .args(["--endpoint-url", &moto.url])
            .envs(moto.env()),
    );
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("--allow-anywhere"), "{}", bad.stderr);
}
