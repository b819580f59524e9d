//! `launch`'s IAM steps: the three roles with their trust and inline
//! policies, the gateway's instance profile, and ECS's service-linked role.

use fossa_contract::aws::AwsResultExt;
use fossa_contract::names::{ECS_SERVICE, ECS_SERVICE_LINKED_ROLE};

use super::Launcher;
use crate::aws::{iam_tags, missing, same_json};
use crate::plan::{self, RolePlan};
use crate::progress::Outcome;
use crate::Result;

impl Launcher<'_> {
    pub(super) async fn role(&mut self, plan: &RolePlan, partition: &str) -> Result<String> {
        let iam = &self.c.iam;
        let name = plan.name.as_str();
        let mut outcome = Outcome::Found;
        let arn = match iam
            .get_role()
            .role_name(name)
            .send()
            .await
            .aws("iam:GetRole", name)
        {
            Ok(out) => {
                let role = out.role().ok_or_else(|| missing("role"))?;
                let trust = role.assume_role_policy_document().unwrap_or_default();
                if !same_json(trust, &plan.trust) {
                    iam.update_assume_role_policy()
                        .role_name(name)
                        .policy_document(plan.trust.to_string())
                        .send()
                        .await
                        .aws("iam:UpdateAssumeRolePolicy", name)?;
                    outcome = Outcome::Updated;
                }
                role.arn().to_owned()
            }
            Err(e) if e.is_code("NoSuchEntity") => {
                outcome = Outcome::Created;
                let mut b = iam
                    .create_role()
                    .role_name(name)
                    .description(format!("fossa-gateway stack {}", self.stack))
                    .assume_role_policy_document(plan.trust.to_string());
                b = b.set_tags(Some(iam_tags(&self.stack)?));
                let out = b.send().await.aws("iam:CreateRole", name)?;
                out.role()
                    .map(|r| r.arn().to_owned())
                    .ok_or_else(|| missing("role"))?
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(doc) = &plan.inline {
            let current = iam
                .get_role_policy()
                .role_name(name)
                .policy_name(plan::iam::INLINE_POLICY_NAME)
                .send()
                .await
                .aws("iam:GetRolePolicy", name);
            let same = match current {
                Ok(p) => same_json(p.policy_document(), doc),
                Err(e) if e.is_code("NoSuchEntity") => false,
                Err(e) => return Err(e.into()),
            };
            if !same {
                iam.put_role_policy()
                    .role_name(name)
                    .policy_name(plan::iam::INLINE_POLICY_NAME)
                    .policy_document(doc.to_string())
                    .send()
                    .await
                    .aws("iam:PutRolePolicy", name)?;
                if outcome == Outcome::Found {
                    outcome = Outcome::Updated;
                }
            }
        }
        // No managed policy is wanted: detach the ones earlier versions attached.
        if outcome != Outcome::Created {
            let attached = iam
                .list_attached_role_policies()
                .role_name(name)
                .send()
                .await
                .aws("iam:ListAttachedRolePolicies", name)?;
            let retired = plan::iam::retired_managed_policies(partition);
            for p in attached.attached_policies() {
                let Some(arn) = p.policy_arn() else { continue };
                if retired.iter().any(|r| r == arn) {
                    iam.detach_role_policy()
                        .role_name(name)
                        .policy_arn(arn)
                        .send()
                        .await
                        .aws("iam:DetachRolePolicy", name)?;
                    outcome = Outcome::Updated;
                }
            }
        }
        self.p.done(outcome, "IAM role", name);
        Ok(arn)
    }

    pub(super) async fn instance_profile(&mut self) -> Result<()> {
        let iam = &self.c.iam;
        let name = self.stack.instance_profile();
        let role = self.stack.gateway_role();
        let mut outcome = Outcome::Found;
        let has_role = match iam
            .get_instance_profile()
            .instance_profile_name(&name)
            .send()
            .await
            .aws("iam:GetInstanceProfile", &name)
        {
            Ok(out) => out
                .instance_profile()
                .is_some_and(|p| p.roles().iter().any(|r| r.role_name() == role)),
            Err(e) if e.is_code("NoSuchEntity") => {
                let mut b = iam.create_instance_profile().instance_profile_name(&name);
                b = b.set_tags(Some(iam_tags(&self.stack)?));
                b.send().await.aws("iam:CreateInstanceProfile", &name)?;
                outcome = Outcome::Created;
                false
            }
            Err(e) => return Err(e.into()),
        };
        if !has_role {
            iam.add_role_to_instance_profile()
                .instance_profile_name(&name)
                .role_name(&role)
                .send()
                .await
                .aws("iam:AddRoleToInstanceProfile", &name)?;
            if outcome == Outcome::Found {
                outcome = Outcome::Updated;
            }
        }
        self.p.done(outcome, "instance profile", &name);
        Ok(())
    }

    /// ECS's service-linked role ([`ECS_SERVICE_LINKED_ROLE`]). Without it,
    /// in an account that never used ECS, CreateCluster and CreateService
    /// fail with "Unable to assume the service linked role"
    /// (<https://docs.aws.amazon.com/AmazonECS/latest/developerguide/using-service-linked-roles.html>).
    /// Made once per account: one that exists, or that another launch makes
    /// at the same moment, is found.
    pub(super) async fn ecs_service_linked_role(&mut self) -> Result<()> {
        let iam = &self.c.iam;
        let name = ECS_SERVICE_LINKED_ROLE;
        let outcome = match iam
            .get_role()
            .role_name(name)
            .send()
            .await
            .aws("iam:GetRole", name)
        {
            Ok(_) => Outcome::Found,
            Err(e) if e.is_code("NoSuchEntity") => match iam
                .create_service_linked_role()
                .aws_service_name(ECS_SERVICE)
                .send()
                .await
                .aws("iam:CreateServiceLinkedRole", name)
            {
                Ok(_) => Outcome::Created,
                Err(e) if taken(&e) => Outcome::Found,
                Err(e) => return Err(e.into()),
            },
            Err(e) => return Err(e.into()),
        };
        self.p.done(outcome, "ECS service-linked role", name);
        Ok(())
    }
}

/// Whether CreateServiceLinkedRole found the role made already: AWS says
/// `InvalidInput: Service role name AWSServiceRoleForECS has been taken in
/// this account, please try a different suffix.`
fn taken(e: &fossa_contract::aws::AwsError) -> bool {
    e.is_code("EntityAlreadyExists")
        || (e.is_code("InvalidInput") && e.detail.contains("has been taken"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fossa_contract::aws::AwsError;

    fn err(code: &str, message: &str) -> AwsError {
        AwsError {
            call: "iam:CreateServiceLinkedRole",
            resource: ECS_SERVICE_LINKED_ROLE.into(),
            detail: format!("{code}: {message}"),
            code: Some(code.into()),
        }
    }

    #[test]
    fn a_role_made_meanwhile_is_found() {
        assert!(taken(&err(
            "InvalidInput",
            "Service role name AWSServiceRoleForECS has been taken in this account, please try a different suffix."
        )));
        assert!(taken(&err(
            "EntityAlreadyExists",
            "Role with name AWSServiceRoleForECS already exists."
        )));
        assert!(!taken(&err(
            "AccessDenied",
            "not authorized to perform: iam:CreateServiceLinkedRole"
        )));
        assert!(!taken(&err("InvalidInput", "Invalid service name")));
    }
}
