//! The service's tasks as ECS lists and describes them: the workers, the
//! tasks that stopped, and the tasks on their way out.

use aws_sdk_ecs::types::{DesiredStatus, Task};
use fossa_contract::aws::{AwsError, AwsResultExt};
use fossa_contract::StackName;
use futures::StreamExt;

/// The service's tasks of `status`, at most `most` of them: ListTasks page
/// by page (100 a page), then DescribeTasks in batches of 100, four at once.
pub async fn service_tasks(
    ecs: &aws_sdk_ecs::Client,
    stack: &StackName,
    status: DesiredStatus,
    most: usize,
) -> Result<Vec<Task>, AwsError> {
    let cluster = stack.cluster();
    let mut arns = Vec::new();
    let mut token = None;
    loop {
        let page = ecs
            .list_tasks()
            .cluster(&cluster)
            .service_name(stack.service())
            .desired_status(status.clone())
            .max_results(100)
            .set_next_token(token)
            .send()
            .await
            .aws("ecs:ListTasks", &cluster)?;
        arns.extend(page.task_arns().iter().cloned());
        token = page.next_token().map(str::to_owned);
        if token.is_none() || arns.len() >= most {
            break;
        }
    }
    arns.truncate(most);
    describe(ecs, stack, &arns).await
}

/// The cluster's tasks `arns` as DescribeTasks has them, in batches of 100,
/// four at once. A task ECS no longer knows is left out.
pub async fn describe(
    ecs: &aws_sdk_ecs::Client,
    stack: &StackName,
    arns: &[String],
) -> Result<Vec<Task>, AwsError> {
    let cluster = stack.cluster();
    let batches: Vec<Vec<String>> = arns.chunks(100).map(<[String]>::to_vec).collect();
    let described: Vec<_> = futures::stream::iter(batches)
        .map(|batch| {
            ecs.describe_tasks()
                .cluster(&cluster)
                .set_tasks(Some(batch))
                .send()
        })
        .buffered(4)
        .collect()
        .await;
    let mut out = Vec::new();
    for d in described {
        out.extend(
            d.aws("ecs:DescribeTasks", &cluster)?
                .tasks()
                .iter()
                .cloned(),
        );
    }
    Ok(out)
}
