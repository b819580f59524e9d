//! A small evaluator of IAM policy documents: whether a policy allows an
//! action on a resource, with IAM's wildcards. The tests use it to check
//! what the agent calls against what `plan` grants.

use serde_json::Value;

/// IAM's wildcard match: `*` is any run of characters, `?` any one
/// (case-insensitive for actions, as IAM treats them).
fn glob(pattern: &str, text: &str, ignore_case: bool) -> bool {
    let norm = |s: &str| {
        if ignore_case {
            s.to_ascii_lowercase().into_bytes()
        } else {
            s.as_bytes().to_vec()
        }
    };
    let (p, t) = (norm(pattern), norm(text));
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

fn strings(v: &Value) -> Vec<&str> {
    match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    }
}

/// The statements of `policy`: IAM takes one statement or a list.
fn statements(policy: &Value) -> Vec<&Value> {
    match &policy["Statement"] {
        Value::Array(a) => a.iter().collect(),
        one @ Value::Object(_) => vec![one],
        _ => vec![],
    }
}

fn names_action(statement: &Value, action: &str) -> bool {
    strings(&statement["Action"])
        .iter()
        .any(|a| glob(a, action, true))
}

/// Whether `policy` allows `action` on `resource`: some Allow statement
/// matches both and no Deny statement does. Conditions are taken as met, so
/// this answers "could this call ever be allowed", which is what a missing
/// grant breaks.
pub fn allows(policy: &Value, action: &str, resource: &str) -> bool {
    let matches = |s: &Value| {
        names_action(s, action)
            && strings(&s["Resource"])
                .iter()
                .any(|r| glob(r, resource, false))
    };
    let all = statements(policy);
    let allowed = all.iter().any(|s| s["Effect"] == "Allow" && matches(s));
    let denied = all
        .iter()
        .any(|s| s["Effect"] == "Deny" && s.get("Condition").is_none() && matches(s));
    allowed && !denied
}

/// Whether some Allow statement of `policy` names `action`, on any resource.
pub fn allows_action(policy: &Value, action: &str) -> bool {
    statements(policy)
        .iter()
        .any(|s| s["Effect"] == "Allow" && names_action(s, action))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_statement_or_a_list() {
        let one = serde_json::json!({"Statement": {"Effect": "Allow", "Action": "ecs:*", "Resource": "arn:x"}});
        assert!(allows(&one, "ecs:ListTasks", "arn:x"));
        assert!(allows_action(&one, "ecs:ListTasks"));
        assert!(!allows_action(&one, "ssm:GetParameter"));
    }

    #[test]
    fn glob_matches_like_iam() {
        assert!(glob("ecs:*", "ecs:ListTasks", true));
        assert!(glob("ECS:listtasks", "ecs:ListTasks", true));
        assert!(glob("a*b?d", "axxbcd", false));
        assert!(glob("parameter/fossa/dev/*", "parameter/fossa/dev/", false));
        assert!(!glob(
            "parameter/fossa/dev/*",
            "parameter/fossa/devx",
            false
        ));
        assert!(!glob("Ab", "ab", false));
    }
}
