//! The fleet's loops, as duties on the one [`Driver`]: they get its
//! backoff, its status line on the board and its events, and a panic in one
//! of them is its failure, not the end of the poller.
//!
//! - `fleet`: polls every worker (first resuming what the history and queue
//!   held when the agent stopped), every poll interval.
//! - `queue`: sends queued tasks after each refresh.
//! - `autoscale`: follows the configured bounds (read from the driver's
//!   context) and decides after each refresh.
//! - `history`: says whether the history is recorded (red while its writes
//!   fail or it is kept in memory), every few seconds.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fossa_contract::config::Autoscale;
use tokio::sync::watch;

use super::FleetModel;
use crate::duties::driver::Driver;
use crate::duties::{watched, Duty, DutyError, Next, Outcome, Registration};

/// How the autoscale duty reads the configured bounds from the context.
pub type Configured<C> = Box<dyn Fn(&C) -> Option<Autoscale> + Send + Sync>;

/// Registers the fleet's three duties on `driver`; `configured` reads the
/// configured autoscaling from the driver's context.
pub fn register<C: Send + Sync + 'static>(
    driver: &mut Driver<C>,
    fleet: &Arc<FleetModel>,
    configured: Configured<C>,
) {
    let interval = fleet.poll_interval();
    driver.register(
        Registration::new(crate::duties::liveness::POLLER, "Workers", interval),
        Box::new(Refresh {
            fleet: fleet.clone(),
            resumed: false,
        }),
    );
    driver.register(
        Registration::new("queue", "Queue", interval).acts(),
        Box::new(Drain {
            fleet: fleet.clone(),
            refreshed: fleet.refreshed(),
        }),
    );
    driver.register(
        Registration::new("history", "History", HISTORY_CHECK),
        Box::new(Recorded(fleet.history().clone())),
    );
    driver.register(
        Registration::new("autoscale", "Autoscaling", interval).acts(),
        Box::new(Scale {
            fleet: fleet.clone(),
            refreshed: fleet.refreshed(),
            configured,
            followed: None,
        }),
    );
}

/// How often the History line is brought up to date.
const HISTORY_CHECK: Duration = Duration::from_secs(5);

/// Says whether the history records what it is given.
struct Recorded(Arc<crate::history::History>);

#[async_trait]
impl<C: Send + Sync + 'static> Duty<C> for Recorded {
    async fn reconcile(&mut self, _: &C) -> Result<Outcome, DutyError> {
        Ok(match self.0.trouble() {
            None => Outcome::done(format!("every run recorded in {}", self.0.path().display())),
            Some(why) => Outcome::done("not recording to its file").with_detail(false, why),
        })
    }
}

/// Polls every worker.
struct Refresh {
    fleet: Arc<FleetModel>,
    resumed: bool,
}

#[async_trait]
impl<C: Send + Sync + 'static> Duty<C> for Refresh {
    async fn reconcile(&mut self, _: &C) -> Result<Outcome, DutyError> {
        if !self.resumed {
            self.fleet.resume().await;
            self.resumed = true;
        }
        self.fleet.refresh().await;
        fossa_contract::fault::freeze_at(crate::duties::liveness::POLLER);
        let every = self.fleet.poll_interval();
        Ok(Outcome {
            next: Next::After(every),
            ..Outcome::done(format!("polling every worker every {}", secs(every)))
        })
    }
}

/// Sends queued tasks after each refresh.
struct Drain {
    fleet: Arc<FleetModel>,
    refreshed: watch::Receiver<u64>,
}

#[async_trait]
impl<C: Send + Sync + 'static> Duty<C> for Drain {
    async fn reconcile(&mut self, _: &C) -> Result<Outcome, DutyError> {
        self.refreshed.borrow_and_update();
        self.fleet.drain().await;
        Ok(Outcome {
            next: Next::Change,
            ..Outcome::done("sends queued tasks as slots free up")
        })
    }
    async fn changed(&mut self) {
        watched(&mut self.refreshed).await
    }
}

/// Follows the configured autoscaling and decides after each refresh.
struct Scale<C> {
    fleet: Arc<FleetModel>,
    refreshed: watch::Receiver<u64>,
    configured: Configured<C>,
    /// The configured autoscaling last followed.
    followed: Option<Option<Autoscale>>,
}

#[async_trait]
impl<C: Send + Sync + 'static> Duty<C> for Scale<C> {
    async fn reconcile(&mut self, ctx: &C) -> Result<Outcome, DutyError> {
        self.refreshed.borrow_and_update();
        let configured = (self.configured)(ctx);
        if self.followed != Some(configured) {
            self.fleet.follow_autoscale(configured);
            self.followed = Some(configured);
        }
        self.fleet.autoscale().await;
        let line = match self.fleet.autoscale_bounds() {
            Some(a) => format!(
                "between {} and {} workers (idle window {} s)",
                a.min_workers, a.max_workers, a.idle_window_secs
            ),
            None => "off: the worker count stays as set".to_owned(),
        };
        Ok(Outcome {
            next: Next::Change,
            ..Outcome::done(line)
        })
    }
    async fn changed(&mut self) {
        watched(&mut self.refreshed).await
    }
}

/// `2 s`, `500 ms`.
fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}
