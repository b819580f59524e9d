//! `destroy`'s first step: what the agent made from inside the VPC (ECS
//! services, task definitions and cluster; the ECR repository; log groups).

use fossa_contract::aws::AwsResultExt;

use super::{absent_ok, Destroyer};
use crate::progress::Outcome;
use crate::Result;

impl Destroyer<'_> {
    pub(super) async fn ecs(&mut self) -> Result<()> {
        let ecs = &self.c.ecs;
        let cluster = self.stack.cluster();
        let found = ecs
            .describe_clusters()
            .clusters(&cluster)
            .send()
            .await
            .aws("ecs:DescribeClusters", &cluster)?;
        if found
            .clusters()
            .iter()
            .any(|c| c.status() == Some("ACTIVE"))
        {
            let services = ecs
                .list_services()
                .cluster(&cluster)
                .send()
                .await
                .aws("ecs:ListServices", &cluster)?;
            for arn in services.service_arns() {
                ecs.update_service()
                    .cluster(&cluster)
                    .service(arn)
                    .desired_count(0)
                    .send()
                    .await
                    .aws("ecs:UpdateService", arn)?;
            }
            // The agent kept busy workers from scale-in: let them go, so
            // nothing of the stack runs on.
            let running = self.tasks(&cluster).await?;
            for batch in running.chunks(fossa_contract::limits::TASK_PROTECTION_BATCH) {
                absent_ok(
                    ecs.update_task_protection()
                        .cluster(&cluster)
                        .set_tasks(Some(batch.to_vec()))
                        .protection_enabled(false)
                        .send()
                        .await
                        .aws("ecs:UpdateTaskProtection", &cluster),
                    &["ResourceNotFoundException"],
                )?;
            }
            for arn in services.service_arns() {
                ecs.delete_service()
                    .cluster(&cluster)
                    .service(arn)
                    .force(true)
                    .send()
                    .await
                    .aws("ecs:DeleteService", arn)?;
                self.p.done(Outcome::Deleted, "ECS service", arn);
            }
            for task in self.tasks(&cluster).await? {
                ecs.stop_task()
                    .cluster(&cluster)
                    .task(&task)
                    .reason("fossa-bootstrap destroy")
                    .send()
                    .await
                    .aws("ecs:StopTask", &task)?;
            }
            self.delete_cluster(&cluster).await?;
            self.p.done(Outcome::Deleted, "ECS cluster", &cluster);
        }
        let family = self.stack.task_family();
        let mut token = None;
        loop {
            let page = ecs
                .list_task_definitions()
                .family_prefix(&family)
                .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
                .set_next_token(token)
                .send()
                .await
                .aws("ecs:ListTaskDefinitions", &family)?;
            for arn in page.task_definition_arns() {
                ecs.deregister_task_definition()
                    .task_definition(arn)
                    .send()
                    .await
                    .aws("ecs:DeregisterTaskDefinition", arn)?;
                self.p.done(Outcome::Deleted, "task definition", arn);
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        Ok(())
    }
    /// The cluster's tasks that are not stopped yet (ARNs).
    async fn tasks(&self, cluster: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .c
                .ecs
                .list_tasks()
                .cluster(cluster)
                .set_next_token(token)
                .send()
                .await
                .aws("ecs:ListTasks", cluster)?;
            out.extend(page.task_arns().iter().cloned());
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// DeleteCluster, waiting while its tasks stop: ECS takes tens of
    /// seconds to take a task through DEACTIVATING, STOPPING and
    /// DEPROVISIONING, and refuses the cluster meanwhile
    /// (`ClusterContainsTasksException`; `ClusterContainsServicesException`
    /// while a deleted service drains: DeleteCluster API reference,
    /// <https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DeleteCluster.html>).
    async fn delete_cluster(&mut self, cluster: &str) -> Result<()> {
        let retry = crate::aws::Retry {
            within: std::time::Duration::from_secs(fossa_contract::limits::DESTROY_TASKS_STOP_SECS),
            first: std::time::Duration::from_secs(2),
            max: std::time::Duration::from_secs(15),
        };
        let holding = |e: &fossa_contract::aws::AwsError| {
            e.is_code("ClusterContainsTasksException")
                || e.is_code("ClusterContainsServicesException")
        };
        let (ecs, p) = (&self.c.ecs, &mut self.p);
        let waiting = |e: &fossa_contract::aws::AwsError| {
            p.working(&format!(
                "waiting for the cluster's tasks to stop ({})",
                e.detail
            ));
        };
        crate::aws::retry_while(retry, holding, waiting, || async {
            ecs.delete_cluster()
                .cluster(cluster)
                .send()
                .await
                .aws("ecs:DeleteCluster", cluster)
        })
        .await?;
        Ok(())
    }

    pub(super) async fn ecr_and_logs(&mut self) -> Result<()> {
        let repo = self.stack.ecr_repository();
        let r = self
            .c
            .ecr
            .delete_repository()
            .repository_name(&repo)
            .force(true)
            .send()
            .await
            .aws("ecr:DeleteRepository", &repo);
        if absent_ok(r, &["RepositoryNotFoundException"])?.is_some() {
            self.p
                .done(Outcome::Deleted, "ECR repository (with its images)", &repo);
        }
        let groups = self
            .c
            .logs
            .describe_log_groups()
            .log_group_name_prefix(format!("/fossa/{}/", self.stack))
            .send()
            .await
            .aws("logs:DescribeLogGroups", self.stack.log_group())?;
        for g in groups
            .log_groups()
            .iter()
            .filter_map(|g| g.log_group_name())
        {
            self.c
                .logs
                .delete_log_group()
                .log_group_name(g)
                .send()
                .await
                .aws("logs:DeleteLogGroup", g)?;
            self.p.done(Outcome::Deleted, "log group", g);
        }
        Ok(())
    }
}
