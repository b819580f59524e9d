//! The artifact bucket's desired guards: its public-access block and a policy
//! that refuses every request not made over TLS.

use serde_json::{json, Value};

use super::iam::Scope;

/// The bucket policy: deny any request without TLS, for everyone.
pub fn bucket_policy(scope: &Scope<'_>) -> Value {
    let bucket = scope.bucket_arn();
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [bucket.clone(), format!("{bucket}/*")],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fossa_contract::StackName;

    #[test]
    fn the_bucket_refuses_plain_http_for_everyone() {
        let stack = StackName::new("dev").unwrap();
        let scope = Scope {
            stack: &stack,
            partition: "aws",
            region: "eu-west-2",
            account: "123456789012",
            bucket: "fossa-dev-123456789012-eu-west-2",
        };
        let p = bucket_policy(&scope);
        let s = &p["Statement"][0];
        assert_eq!(s["Effect"], "Deny");
        assert_eq!(s["Principal"], "*");
        assert_eq!(s["Condition"]["Bool"]["aws:SecureTransport"], "false");
        assert_eq!(
            s["Resource"][1],
            "arn:aws:s3:::fossa-dev-123456789012-eu-west-2/*"
        );
    }
}
