//! The driver (omicron's background-task `Driver`): one loop per registered
//! duty. A loop runs its duty's reconcile, publishes the duty's status and
//! pushes an event when the outcome changes, then waits for the next run: the
//! period (or what the outcome asked for) after a success, a growing jittered
//! backoff after a failure, and at once when the settings change or an input
//! the duty watches does. One failing duty never stops another.

use std::sync::Arc;
use std::time::Duration;

use fossa_web::model::Component;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use futures::FutureExt;

use super::lease::Lease;
use super::{watched, Duty, DutyError, Next, Outcome, Registration};
use crate::events::Events;

/// One duty's state, as the overview and the API show it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DutyStatus {
    /// Name, title, whether it is well, and its last line.
    pub component: Component,
    /// Reconciles that succeeded since start.
    pub successes: u64,
    /// Failures since the last success.
    pub failures: u32,
    /// When its last reconcile succeeded, seconds since the epoch.
    pub last_success_at: Option<i64>,
    /// When the run going on started (seconds since the epoch); `None`
    /// between runs.
    pub running_since: Option<i64>,
    /// When a run last ended, with a result or an error.
    pub last_result_at: Option<i64>,
    /// Its registration's [`Registration::give_up_after`], in seconds.
    pub give_up_secs: u64,
}

/// Every duty's status, in registration order.
pub type Board = watch::Receiver<Vec<DutyStatus>>;

/// A board with fixed lines only (a fleet without duties: tests, benches).
pub fn fixed_board(components: Vec<Component>) -> Board {
    let statuses = components
        .into_iter()
        .map(|component| DutyStatus {
            component,
            ..Default::default()
        })
        .collect();
    watch::channel(statuses).1
}

/// Backoff after consecutive failures: `first` doubling up to `max`, ±20% jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// After the first failure.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(5),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The wait after the `n`-th consecutive failure (0-based).
    pub fn after(&self, n: u32) -> Duration {
        let base = self.first.saturating_mul(1 << n.min(16)).min(self.max);
        base.mul_f64(rand::random_range(0.8..1.2))
    }
}

/// How many times each duty became well (its first good result, and each
/// after a failure or an unwell one): what the cluster duty compares to
/// know whether the cause of a failed deployment may have gone.
#[derive(Debug, Default)]
pub struct Recoveries(std::sync::Mutex<std::collections::HashMap<&'static str, u64>>);

impl Recoveries {
    /// Counts a recovery of `duty`: the driver does when it becomes well,
    /// and a duty may when it repaired something while staying well.
    pub fn bump(&self, duty: &'static str) {
        let mut m = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *m.entry(duty).or_default() += 1;
    }

    /// The recoveries of these duties, added up.
    pub fn of(&self, duties: &[&str]) -> u64 {
        let m = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        duties.iter().filter_map(|d| m.get(d)).sum()
    }
}

/// Runs registered duties; see the module docs.
pub struct Driver<C: Send + Sync + 'static> {
    duties: Vec<(usize, Registration, Box<dyn Duty<C>>)>,
    board: watch::Sender<Vec<DutyStatus>>,
    events: Events,
    backoff: Backoff,
    recoveries: Arc<Recoveries>,
    lease: Option<watch::Receiver<Lease>>,
}

impl<C: Send + Sync + 'static> Driver<C> {
    /// A driver with no duties yet.
    pub fn new(events: Events, backoff: Backoff) -> Self {
        Driver {
            duties: Vec::new(),
            board: watch::Sender::new(Vec::new()),
            events,
            backoff,
            recoveries: Arc::default(),
            lease: None,
        }
    }

    /// Runs the duties registered as acting ([`Registration::acts`]) only
    /// while `lease` says this agent holds it (without a lease, always).
    pub fn gate(mut self, lease: watch::Receiver<Lease>) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Counts each duty's recoveries in `r` (shared with the duties that read it).
    pub fn count_recoveries_in(mut self, r: Arc<Recoveries>) -> Self {
        self.recoveries = r;
        self
    }

    fn slot(&mut self, component: Component) -> usize {
        let mut index = 0;
        self.board.send_modify(|b| {
            index = b.len();
            b.push(DutyStatus {
                component,
                ..Default::default()
            });
        });
        index
    }

    /// Adds a duty under `reg` (its name, title and period); it starts
    /// with [`Driver::start`].
    pub fn register(&mut self, reg: Registration, duty: Box<dyn Duty<C>>) {
        let slot = self.slot(Component {
            name: reg.name.into(),
            title: reg.title.into(),
            ok: false,
            detail: "starting".into(),
            ..Default::default()
        });
        self.board
            .send_modify(|b| b[slot].give_up_secs = reg.give_up_after.as_secs());
        self.duties.push((slot, reg, duty));
    }

    /// Adds a line that no duty here reconciles (NAT in local mode, a duty
    /// `agent.toml` leaves to someone else).
    pub fn note(&mut self, name: &str, title: &str, ok: bool, detail: impl Into<String>) {
        self.slot(Component {
            name: name.into(),
            title: title.into(),
            ok,
            detail: detail.into(),
            ..Default::default()
        });
    }

    /// Every duty's status, kept current.
    pub fn board(&self) -> Board {
        self.board.subscribe()
    }

    /// Starts one loop per duty; each returns when `shutdown` turns true.
    pub fn start(
        self,
        ctx: watch::Receiver<Arc<C>>,
        shutdown: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        let board = Arc::new(self.board);
        self.duties
            .into_iter()
            .map(|(slot, reg, duty)| {
                let reg_acts = reg.acts;
                let run = Loop {
                    slot,
                    reg,
                    duty,
                    board: board.clone(),
                    events: self.events.clone(),
                    backoff: self.backoff,
                    recoveries: self.recoveries.clone(),
                    lease: self.lease.clone().filter(|_| reg_acts),
                };
                tokio::spawn(run.run(ctx.clone(), shutdown.clone()))
            })
            .collect()
    }
}

/// One duty's loop.
struct Loop<C: Send + Sync + 'static> {
    slot: usize,
    reg: Registration,
    duty: Box<dyn Duty<C>>,
    board: Arc<watch::Sender<Vec<DutyStatus>>>,
    events: Events,
    backoff: Backoff,
    recoveries: Arc<Recoveries>,
    /// For a duty that acts: the lease it waits for.
    lease: Option<watch::Receiver<Lease>>,
}

pub use fossa_contract::aws::chain;

/// How often a duty waiting for the lease looks at it again.
const LEASE_LOOK_EVERY: Duration = Duration::from_secs(2);

/// How often a stuck step's line is brought up to date.
const HUNG_LOOK_EVERY: Duration = Duration::from_secs(5);

/// Shows a duty's line on the board; `outcome` counts a success or failure.
fn publish(
    board: &watch::Sender<Vec<DutyStatus>>,
    slot: usize,
    ok: bool,
    detail: String,
    outcome: Option<bool>,
) {
    board.send_modify(|b| {
        let s = &mut b[slot];
        s.component.ok = ok;
        s.component.detail = detail;
        if outcome.is_some() {
            s.running_since = None;
            s.last_result_at = Some(fossa_contract::unix_now());
        }
        match outcome {
            Some(true) => {
                s.successes += 1;
                s.failures = 0;
                s.last_success_at = Some(fossa_contract::unix_now());
            }
            Some(false) => s.failures += 1,
            None => {}
        }
    });
}

/// What a panic said.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

impl<C: Send + Sync + 'static> Loop<C> {
    fn publish(&self, ok: bool, detail: String, outcome_ok: bool) {
        publish(&self.board, self.slot, ok, detail, Some(outcome_ok));
    }

    /// While another agent holds the lease, shows so and waits (looking
    /// again when the lease changes, and every few seconds, since a lease
    /// that could not be renewed runs out by itself). `false` on shutdown.
    async fn wait_for_lease(&mut self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let Some(mut lease) = self.lease.clone() else {
            return true;
        };
        let mut said = None;
        loop {
            let now = lease.borrow_and_update().clone();
            if now.held() {
                if said.is_some() {
                    self.events.push(
                        self.reg.name,
                        false,
                        "this agent holds the lease: acting again",
                    );
                }
                return true;
            }
            let line = now.waiting_line();
            if said.as_ref() != Some(&line) {
                self.events.push(self.reg.name, false, &line);
                // Not shown well: nothing of it is done by this agent.
                publish(&self.board, self.slot, false, line.clone(), None);
                said = Some(line);
            }
            tokio::select! {
                _ = watched(&mut lease) => {}
                _ = tokio::time::sleep(LEASE_LOOK_EVERY) => {}
                _ = shutdown.changed() => return false,
            }
        }
    }

    async fn run(mut self, mut ctx: watch::Receiver<Arc<C>>, mut shutdown: watch::Receiver<bool>) {
        let name = self.reg.name;
        let mut failures = 0u32;
        let mut last: Option<(String, bool)> = None;
        loop {
            if !self.wait_for_lease(&mut shutdown).await {
                return;
            }
            let current = ctx.borrow_and_update().clone();
            self.board.send_modify(|b| {
                b[self.slot].running_since = Some(fossa_contract::unix_now());
            });
            // A bug in one duty shows as its failure; it never ends the loop.
            let run = {
                let reconcile = std::panic::AssertUnwindSafe(self.duty.reconcile(&current))
                    .catch_unwind();
                tokio::pin!(reconcile);
                // A step that gives no result shows as stuck on the board
                // (and once in the events), with how long, while it goes on.
                let started = tokio::time::Instant::now();
                let mut look = started + self.reg.hung_after;
                let give_up = started + self.reg.give_up_after;
                let mut said = false;
                loop {
                    tokio::select! {
                        r = &mut reconcile => break r,
                        _ = tokio::time::sleep_until(give_up) => {
                            // Dropping the step cancels what it awaits.
                            break Ok(Err(DutyError::Abandoned(self.reg.give_up_after)));
                        }
                        _ = tokio::time::sleep_until(look) => {
                            let line = format!(
                                "stuck: no result for {} s (the step goes on; an AWS call, a build or a host command that does not answer)",
                                started.elapsed().as_secs()
                            );
                            if !said {
                                self.events.push(name, true, &line);
                                said = true;
                            }
                            publish(&self.board, self.slot, false, line, None);
                            look += HUNG_LOOK_EVERY;
                        }
                        _ = shutdown.changed() => return,
                    }
                }
            }
            .unwrap_or_else(|p| Err(DutyError::Panicked(panic_text(p.as_ref()))));
            let wait = match run {
                Ok(Outcome {
                    summary,
                    detail,
                    healthy,
                    next,
                }) => {
                    let seen = (summary.clone(), healthy);
                    let shown = match detail {
                        Some(d) => format!("{summary}; {d}"),
                        None => summary,
                    };
                    // One event per change of the line or of health, with the detail it had then.
                    if failures > 0 || last.as_ref() != Some(&seen) {
                        self.events.push(name, !healthy, &shown);
                    }
                    if healthy && !matches!(last, Some((_, true))) {
                        self.recoveries.bump(name);
                    }
                    failures = 0;
                    self.publish(healthy, shown, true);
                    last = Some(seen);
                    match next {
                        Next::Period => Some(self.reg.period),
                        Next::After(d) => Some(d),
                        Next::Change => None,
                    }
                }
                Err(e) => {
                    failures += 1;
                    let wait = self.backoff.after(failures - 1);
                    let text = chain(&e);
                    self.events.push(
                        name,
                        true,
                        format!("{text} (retry {failures} in {}s)", wait.as_secs()),
                    );
                    self.publish(false, text, false);
                    last = None;
                    Some(wait)
                }
            };
            let sleep = async {
                match wait {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                _ = ctx.changed() => {}
                _ = self.duty.changed() => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::duties::DutyError;

    /// A fake duty: fails its first `fail_first` runs, then succeeds with
    /// its run count; wakes when `poke` changes.
    struct Fake {
        runs: Arc<AtomicU32>,
        fail_first: u32,
        poke: watch::Receiver<u32>,
        next: Next,
    }

    #[async_trait::async_trait]
    impl Duty<u32> for Fake {
        async fn reconcile(&mut self, ctx: &u32) -> Result<Outcome, DutyError> {
            let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
            if n <= self.fail_first {
                let inner = std::io::Error::other("disk on fire");
                return Err(DutyError::Io {
                    what: format!("cannot write run {n}"),
                    source: inner,
                });
            }
            Ok(Outcome {
                next: self.next,
                ..Outcome::done(format!("run {n} with settings {ctx}"))
            })
        }
        async fn changed(&mut self) {
            crate::duties::watched(&mut self.poke).await
        }
    }

    /// A driver whose backoff is milliseconds.
    fn fast_driver<C: Send + Sync + 'static>(events: &Events) -> Driver<C> {
        Driver::new(
            events.clone(),
            Backoff {
                first: Duration::from_millis(20),
                max: Duration::from_millis(40),
            },
        )
    }

    struct World {
        runs: Arc<AtomicU32>,
        poke: watch::Sender<u32>,
        ctx: watch::Sender<Arc<u32>>,
        shutdown: watch::Sender<bool>,
        board: Board,
        events: Events,
        tasks: Vec<JoinHandle<()>>,
        recoveries: Arc<Recoveries>,
    }

    fn world(fail_first: u32, next: Next) -> World {
        let runs = Arc::new(AtomicU32::new(0));
        let (poke, poke_rx) = watch::channel(0);
        let events = Events::default();
        let recoveries = Arc::new(Recoveries::default());
        let mut driver = fast_driver(&events).count_recoveries_in(recoveries.clone());
        driver.note("nat", "NAT", true, "not needed here");
        driver.register(
            Registration::new("fake", "Fake", Duration::from_secs(3600)),
            Box::new(Fake {
                runs: runs.clone(),
                fail_first,
                poke: poke_rx,
                next,
            }),
        );
        let board = driver.board();
        let (ctx, ctx_rx) = watch::channel(Arc::new(7));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let tasks = driver.start(ctx_rx, shutdown_rx);
        World {
            runs,
            poke,
            ctx,
            shutdown,
            board,
            events,
            tasks,
            recoveries,
        }
    }

    async fn until(board: &mut Board, f: impl Fn(&[DutyStatus]) -> bool) -> Vec<DutyStatus> {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if f(&board.borrow_and_update()) {
                    return board.borrow().clone();
                }
                board.changed().await.expect("driver alive");
            }
        })
        .await
        .expect("status reached in time")
    }

    #[tokio::test]
    async fn failures_back_off_then_recover_with_the_whole_chain_in_events() {
        let mut w = world(2, Next::Period);
        let b = until(&mut w.board, |b| b[1].successes == 1).await;
        assert_eq!(w.runs.load(Ordering::SeqCst), 3);
        assert_eq!(b[0].component.name, "nat", "notes keep their place");
        assert!(b[0].component.ok);
        assert_eq!(b[1].component.name, "fake");
        assert_eq!(b[1].component.title, "Fake");
        assert!(b[1].component.ok);
        assert_eq!(b[1].component.detail, "run 3 with settings 7");
        assert!(b[1].last_success_at.is_some_and(|t| t > 0));
        assert_eq!(b[0].last_success_at, None, "a note never ran");
        let events = w.events.list();
        let errors: Vec<_> = events.iter().filter(|e| e.error).collect();
        assert_eq!(errors.len(), 2, "{events:?}");
        assert!(
            errors[0]
                .message
                .starts_with("cannot write run 1: disk on fire (retry 1 in "),
            "{}",
            errors[0].message
        );
        assert_eq!(events.last().unwrap().message, "run 3 with settings 7");
        assert_eq!(
            w.recoveries.of(&["fake"]),
            1,
            "well after two failures: one recovery"
        );
        w.poke.send_replace(1);
        until(&mut w.board, |b| b[1].successes == 2).await;
        assert_eq!(
            w.recoveries.of(&["fake", "nat"]),
            1,
            "well again is no recovery; a note never recovers"
        );
        w.shutdown.send_replace(true);
        for t in w.tasks {
            t.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_failure_shows_on_the_board_at_once() {
        let mut w = world(1, Next::Period);
        let b = until(&mut w.board, |b| b[1].failures == 1).await;
        assert!(!b[1].component.ok);
        assert_eq!(b[1].component.detail, "cannot write run 1: disk on fire");
        w.shutdown.send_replace(true);
    }

    #[tokio::test]
    async fn watched_inputs_and_settings_wake_a_waiting_duty() {
        let mut w = world(0, Next::Change);
        until(&mut w.board, |b| b[1].successes == 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(w.runs.load(Ordering::SeqCst), 1, "waits for a change");
        w.poke.send_replace(1);
        until(&mut w.board, |b| b[1].successes == 2).await;
        w.ctx.send_replace(Arc::new(8));
        let b = until(&mut w.board, |b| b[1].successes == 3).await;
        assert_eq!(b[1].component.detail, "run 3 with settings 8");
        // Unchanged summaries are not repeated as events; new ones are.
        let lines = w.events.list().len();
        assert_eq!(lines, 3);
        w.shutdown.send_replace(true);
        for t in w.tasks {
            tokio::time::timeout(Duration::from_secs(1), t)
                .await
                .expect("stops on shutdown")
                .unwrap();
        }
    }

    /// Panics on its first run, then succeeds.
    struct Panicky(u32);

    #[async_trait::async_trait]
    impl Duty<u32> for Panicky {
        async fn reconcile(&mut self, _: &u32) -> Result<Outcome, DutyError> {
            self.0 += 1;
            if self.0 == 1 {
                panic!("a bug in run 1");
            }
            Ok(Outcome::done(format!("run {}", self.0)))
        }
    }

    #[tokio::test]
    async fn a_panic_is_a_failure_with_backoff_and_the_loop_goes_on() {
        let events = Events::default();
        let mut driver = fast_driver(&events);
        driver.register(
            Registration::new("panicky", "Panicky", Duration::from_secs(3600)),
            Box::new(Panicky(0)),
        );
        let mut board = driver.board();
        let (_ctx, ctx_rx) = watch::channel(Arc::new(0));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let tasks = driver.start(ctx_rx, shutdown_rx);
        let b = until(&mut board, |b| b[0].successes == 1).await;
        assert_eq!(b[0].component.detail, "run 2");
        let errors: Vec<_> = events.list().into_iter().filter(|e| e.error).collect();
        assert!(
            errors[0]
                .message
                .starts_with("the step panicked: a bug in run 1 (retry 1 in "),
            "{errors:?}"
        );
        shutdown.send_replace(true);
        for t in tasks {
            t.await.expect("the loop ended by itself, not by the panic");
        }
    }

    /// Takes 600 ms to give its first result.
    struct Slow(u32);

    #[async_trait::async_trait]
    impl Duty<u32> for Slow {
        async fn reconcile(&mut self, _: &u32) -> Result<Outcome, DutyError> {
            self.0 += 1;
            if self.0 == 1 {
                tokio::time::sleep(Duration::from_millis(600)).await;
            }
            Ok(Outcome::done(format!("run {}", self.0)))
        }
    }

    #[tokio::test]
    async fn a_step_without_a_result_shows_as_stuck_until_it_gives_one() {
        let events = Events::default();
        let mut driver = fast_driver(&events);
        driver.register(
            Registration {
                give_up_after: Duration::from_secs(60),
                ..Registration::new("slow", "Slow", Duration::from_secs(3600))
                    .hung_after(Duration::from_millis(100))
            },
            Box::new(Slow(0)),
        );
        let mut board = driver.board();
        let (_ctx, ctx_rx) = watch::channel(Arc::new(0));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let tasks = driver.start(ctx_rx, shutdown_rx);
        let b = until(&mut board, |b| b[0].component.detail.starts_with("stuck:")).await;
        assert!(!b[0].component.ok);
        let b = until(&mut board, |b| b[0].successes == 1).await;
        assert!(b[0].component.ok);
        assert_eq!(b[0].component.detail, "run 1");
        let stuck: Vec<_> = events
            .list()
            .into_iter()
            .filter(|e| e.message.starts_with("stuck:"))
            .collect();
        assert_eq!(stuck.len(), 1, "said once: {stuck:?}");
        shutdown.send_replace(true);
        for t in tasks {
            t.await.unwrap();
        }
    }

    /// Its first run never ends.
    struct Hung(u32);

    #[async_trait::async_trait]
    impl Duty<u32> for Hung {
        async fn reconcile(&mut self, _: &u32) -> Result<Outcome, DutyError> {
            self.0 += 1;
            if self.0 == 1 {
                std::future::pending::<()>().await;
            }
            Ok(Outcome::done(format!("run {}", self.0)))
        }
    }

    #[tokio::test]
    async fn a_step_that_never_ends_is_abandoned_as_a_failure_and_run_again() {
        let events = Events::default();
        let mut driver = fast_driver(&events);
        driver.register(
            Registration::new("hung", "Hung", Duration::from_secs(3600))
                .hung_after(Duration::from_millis(100)),
            Box::new(Hung(0)),
        );
        let mut board = driver.board();
        let (_ctx, ctx_rx) = watch::channel(Arc::new(0));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let tasks = driver.start(ctx_rx, shutdown_rx);
        let b = until(&mut board, |b| b[0].component.detail.contains("abandoned")).await;
        assert!(!b[0].component.ok);
        let b = until(&mut board, |b| b[0].successes == 1).await;
        assert_eq!(b[0].component.detail, "run 2");
        let said: Vec<_> = events
            .list()
            .into_iter()
            .filter(|e| e.message.contains("abandoned"))
            .collect();
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0]
                .message
                .starts_with("the step gave no result within 200ms and was abandoned"),
            "{said:?}"
        );
        shutdown.send_replace(true);
        for t in tasks {
            t.await.unwrap();
        }
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter() {
        let b = Backoff::default();
        for (n, secs) in [(0, 5.0), (1, 10.0), (3, 40.0), (6, 300.0), (40, 300.0)] {
            let d = b.after(n).as_secs_f64();
            assert!(d >= secs * 0.8 && d <= secs * 1.2, "{n}: {d}");
        }
    }
}
