//! The tags every resource of a stack carries; `destroy` finds resources by them.

/// Tag key holding the stack name.
pub const STACK: &str = "fossa:stack";
/// Tag key naming the tool that created the resource.
pub const MANAGED_BY: &str = "fossa:managed-by";
/// Tag key naming a resource's role inside the stack (e.g. `public`, `private-1`).
pub const ROLE: &str = "fossa:role";
/// On task definitions: the hash of the spec they were registered from.
pub const SPEC_HASH: &str = "fossa:spec-hash";
/// [`MANAGED_BY`] value for what `fossa-bootstrap` creates.
pub const BY_BOOTSTRAP: &str = "fossa-bootstrap";
/// [`MANAGED_BY`] value for what `fossa-agent` creates.
pub const BY_AGENT: &str = "fossa-agent";

/// The standard tag set for a resource: `(key, value)` pairs.
pub fn standard(stack: &crate::StackName, managed_by: &str) -> Vec<(String, String)> {
    vec![
        (STACK.to_owned(), stack.to_string()),
        (MANAGED_BY.to_owned(), managed_by.to_owned()),
    ]
}
