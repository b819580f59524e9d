//! `fossa-bootstrap destroy`: deletes everything of the stack in dependency
//! order, waits where AWS needs it, and ends by listing what is left. It
//! first marks the stack config `destroying` and terminates the instance, so
//! a running agent stops making things; then what the agent made, the
//! network, IAM, the bucket and the parameters.

mod agent_made;
mod iam;
mod instance;
mod lasting;
mod network;
mod parameters;
mod storage;

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

use fossa_contract::aws::AwsError;
use fossa_contract::StackName;

use crate::cli::DestroyArgs;
use crate::clients::Clients;
use crate::inventory::inventory;
use crate::progress::Progress;
use crate::{Error, Result};

fn absent_ok<T>(r: std::result::Result<T, AwsError>, codes: &[&str]) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if codes.iter().any(|c| e.is_code(c)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Retries `f` while AWS reports a dependency that is still being released.
async fn retry_dependency<T, F, Fut>(what: &str, f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, AwsError>>,
{
    let retry = crate::aws::Retry {
        within: Duration::from_secs(600),
        first: Duration::from_secs(5),
        max: Duration::from_secs(5),
    };
    let dependency =
        |e: &AwsError| e.is_code("DependencyViolation") || e.is_code("InvalidParameterValue");
    let waiting = |e: &AwsError| tracing::info!("{what}: waiting for dependencies: {e}");
    Ok(crate::aws::retry_while(retry, dependency, waiting, f).await?)
}

struct Destroyer<'a> {
    c: &'a Clients,
    stack: &'a StackName,
    p: Progress,
}

fn confirm(stack: &StackName, region: &str) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage(format!("destroy deletes every resource of stack {stack}: pass --yes to confirm when not at a terminal")));
    }
    print!("Delete every resource of stack {stack} in {region}? Type the stack name to confirm: ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    if line.trim() != stack.as_str() {
        return Err(Error::Usage("not confirmed; nothing was deleted".into()));
    }
    Ok(())
}

/// `destroy`.
pub async fn run(args: &DestroyArgs) -> Result<()> {
    let c = Clients::new(&args.stack.aws()).await?;
    let id = c.identity().await?;
    let stack = &args.stack.stack;
    let before = inventory(&c, stack, &id.account).await?;
    if before.is_empty() {
        println!("stack {stack} has no resources in {} (account {}): nothing to destroy. Check --stack and --region if you expected some.", c.region, id.account);
        return Ok(());
    }
    if !args.yes {
        confirm(stack, &c.region)?;
    }
    let mut d = Destroyer {
        c: &c,
        stack,
        p: Progress::new(),
    };
    // The agent must not make again what is deleted: tell it to stand down,
    // stop its instance, and give a still-running agent one check period to
    // see the mark before its resources go.
    let marked = Instant::now();
    let told = d.stand_agent_down().await?;
    d.instances().await?;
    let grace = Duration::from_secs(fossa_contract::limits::CONFIG_CHECK_SECS + 5);
    if told && marked.elapsed() < grace {
        d.p.working("giving a running agent time to stand down");
        tokio::time::sleep(grace - marked.elapsed()).await;
    }
    d.lasting().await?;
    d.ecs().await?;
    d.ecr_and_logs().await?;
    d.network().await?;
    d.iam().await?;
    d.bucket(&id.account).await?;
    d.parameters().await?;
    let left = inventory(&c, stack, &id.account).await?;
    d.p.note(&format!(
        "{} AWS API calls in {:.1}s",
        c.counter.get(),
        d.p.elapsed().as_secs_f64()
    ));
    d.p.finish();
    if left.is_empty() {
        println!("stack {stack} destroyed: nothing left.");
        Ok(())
    } else {
        for r in &left {
            println!("  left: {:<22} {} {}", r.kind, r.id, r.detail);
        }
        Err(Error::Unexpected(format!(
            "{} resources of stack {stack} are left; run destroy again",
            left.len()
        )))
    }
}
