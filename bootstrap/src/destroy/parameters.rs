//! `destroy`'s SSM parameters under the stack's path.

use fossa_contract::aws::AwsResultExt;

use super::Destroyer;
use crate::progress::Outcome;
use crate::Result;

impl Destroyer<'_> {
    /// Marks the stack config `destroying`, so a running agent stops making
    /// AWS resources at its next check; returns whether there was a config.
    pub(super) async fn stand_agent_down(&mut self) -> Result<bool> {
        let Some(mut config) = crate::aws::read_stack_config(&self.c.ssm, self.stack).await? else {
            return Ok(false);
        };
        if !config.destroying {
            config.destroying = true;
            let name = crate::aws::write_stack_config(&self.c.ssm, self.stack, &config).await?;
            self.p
                .done(Outcome::Updated, "agent told to stand down", &name);
        }
        Ok(true)
    }

    pub(super) async fn parameters(&mut self) -> Result<()> {
        let path = self.stack.ssm_path();
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .c
                .ssm
                .get_parameters_by_path()
                .path(&path)
                .recursive(true)
                .set_next_token(token)
                .send()
                .await
                .aws("ssm:GetParametersByPath", &path)?;
            names.extend(
                page.parameters()
                    .iter()
                    .filter_map(|p| p.name().map(str::to_owned)),
            );
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        for chunk in names.chunks(10) {
            self.c
                .ssm
                .delete_parameters()
                .set_names(Some(chunk.to_vec()))
                .send()
                .await
                .aws("ssm:DeleteParameters", &path)?;
        }
        if !names.is_empty() {
            self.p.done(
                Outcome::Deleted,
                "SSM parameters",
                &format!("{} under {path}", names.len()),
            );
        }
        Ok(())
    }
}
