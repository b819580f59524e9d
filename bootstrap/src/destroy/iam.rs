//! `destroy`'s IAM: the instance profile and the three roles with their policies.

use fossa_contract::aws::AwsResultExt;

use super::{absent_ok, Destroyer};
use crate::progress::Outcome;
use crate::Result;

impl Destroyer<'_> {
    pub(super) async fn iam(&mut self) -> Result<()> {
        let iam = &self.c.iam;
        let profile = self.stack.instance_profile();
        let found = absent_ok(
            iam.get_instance_profile()
                .instance_profile_name(&profile)
                .send()
                .await
                .aws("iam:GetInstanceProfile", &profile),
            &["NoSuchEntity"],
        )?;
        if let Some(found) = found {
            for role in found
                .instance_profile()
                .map(|p| p.roles())
                .unwrap_or_default()
            {
                iam.remove_role_from_instance_profile()
                    .instance_profile_name(&profile)
                    .role_name(role.role_name())
                    .send()
                    .await
                    .aws("iam:RemoveRoleFromInstanceProfile", &profile)?;
            }
            iam.delete_instance_profile()
                .instance_profile_name(&profile)
                .send()
                .await
                .aws("iam:DeleteInstanceProfile", &profile)?;
            self.p.done(Outcome::Deleted, "instance profile", &profile);
        }
        for role in [
            self.stack.gateway_role(),
            self.stack.execution_role(),
            self.stack.task_role(),
        ] {
            let inline = absent_ok(
                iam.list_role_policies()
                    .role_name(&role)
                    .send()
                    .await
                    .aws("iam:ListRolePolicies", &role),
                &["NoSuchEntity"],
            )?;
            let Some(inline) = inline else { continue };
            for name in inline.policy_names() {
                iam.delete_role_policy()
                    .role_name(&role)
                    .policy_name(name)
                    .send()
                    .await
                    .aws("iam:DeleteRolePolicy", &role)?;
            }
            let attached = iam
                .list_attached_role_policies()
                .role_name(&role)
                .send()
                .await
                .aws("iam:ListAttachedRolePolicies", &role)?;
            for p in attached
                .attached_policies()
                .iter()
                .filter_map(|p| p.policy_arn())
            {
                iam.detach_role_policy()
                    .role_name(&role)
                    .policy_arn(p)
                    .send()
                    .await
                    .aws("iam:DetachRolePolicy", &role)?;
            }
            iam.delete_role()
                .role_name(&role)
                .send()
                .await
                .aws("iam:DeleteRole", &role)?;
            self.p.done(Outcome::Deleted, "IAM role", &role);
        }
        Ok(())
    }
}
