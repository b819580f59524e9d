//! The one poll loop of the tests: look, and if it is not so yet, look again
//! a little later, until a deadline. Waits start at [`FIRST_LOOK`] and double
//! up to [`POLL_EVERY`], so a part that starts in 30 ms is seen in 30 ms and a
//! slow one is not asked twenty times a second.

use std::future::Future;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// The first wait between two looks.
pub const FIRST_LOOK: Duration = Duration::from_millis(25);
/// The longest wait between two looks.
pub const POLL_EVERY: Duration = Duration::from_millis(500);

/// The waits between looks: [`FIRST_LOOK`], doubling up to [`POLL_EVERY`].
fn waits() -> impl Iterator<Item = Duration> {
    std::iter::successors(Some(FIRST_LOOK), |w| Some((*w * 2).min(POLL_EVERY)))
}

/// Looks with `check` until it gives `Ok` or `within` has passed; on time-out
/// it gives the last `Err`, what was seen instead.
pub async fn poll<T, E, F: Future<Output = Result<T, E>>>(
    within: Duration,
    mut check: impl FnMut() -> F,
) -> Result<T, E> {
    let deadline = Instant::now() + within;
    let mut waits = waits();
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(seen) if Instant::now() >= deadline => return Err(seen),
            Err(_) => tokio::time::sleep(waits.next().unwrap_or(POLL_EVERY)).await,
        }
    }
}

/// [`poll`] for code that is not async (process set-up, `Drop`).
pub fn poll_blocking<T, E>(
    within: Duration,
    mut check: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = Instant::now() + within;
    let mut waits = waits();
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(seen) if Instant::now() >= deadline => return Err(seen),
            Err(_) => std::thread::sleep(waits.next().unwrap_or(POLL_EVERY)),
        }
    }
}

/// Looks with `check` until it gives `Ok`, and returns that. After `within`
/// the test fails with `what` and the last `Err`: what was seen instead.
pub async fn eventually<T, E: std::fmt::Display>(
    what: &str,
    within: Duration,
    mut check: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + within;
    let mut waits = waits();
    loop {
        match check().await {
            Ok(v) => return v,
            Err(seen) => assert!(
                Instant::now() < deadline,
                "{what} within {within:?}: {seen}"
            ),
        }
        tokio::time::sleep(waits.next().unwrap_or(POLL_EVERY)).await;
    }
}

/// [`eventually`] for code that is not async.
pub fn eventually_blocking<T, E: std::fmt::Display>(
    what: &str,
    within: Duration,
    check: impl FnMut() -> Result<T, E>,
) -> T {
    poll_blocking(within, check).unwrap_or_else(|seen| panic!("{what} within {within:?}: {seen}"))
}

/// `Ok(())` when `cond` holds, else `Err(seen())`: turns a condition into
/// what [`eventually`] takes, with what was seen for the failure message.
pub fn holds<S>(cond: bool, seen: impl FnOnce() -> S) -> Result<(), S> {
    if cond {
        Ok(())
    } else {
        Err(seen())
    }
}

/// Waits up to `within` for `child` to exit; its status, or `None` if it
/// still runs (the caller decides whether to kill it or to fail).
pub fn exited_within(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    poll_blocking(within, || child.try_wait().ok().flatten().ok_or(())).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap() {
        let w: Vec<_> = waits().take(7).map(|d| d.as_millis()).collect();
        assert_eq!(w, [25, 50, 100, 200, 400, 500, 500]);
    }

    #[test]
    fn poll_gives_the_last_thing_seen_on_time_out() {
        let mut n = 0;
        let r: Result<(), i32> = poll_blocking(Duration::from_millis(60), || {
            n += 1;
            Err(n)
        });
        assert_eq!(r, Err(n));
        assert!(n >= 2);
    }
}
