//! Limits both binaries enforce, each written once.

/// The shortest UI password accepted from `GATEWAY_HTTP_PASSWORD`.
pub const MIN_PASSWORD_LEN: usize = 12;

/// The most workers a stack runs (`launch --workers`, the UI's scale).
pub const MAX_WORKERS: u32 = 1000;

/// The most workers local mode runs on one machine.
pub const LOCAL_MAX_WORKERS: u32 = 64;

/// How often the agent checks SSM for a new stack config or UI password.
pub const CONFIG_CHECK_SECS: u64 = 15;

/// How far back the cluster duty looks for worker tasks that stopped on
/// their own (exited, or never started), and for ECS's word that it could
/// not place a task, to report them.
pub const TASK_FAILURE_WINDOW_SECS: i64 = 600;

/// Tasks and subtasks the history keeps by default (`[history] max_tasks`).
pub const HISTORY_MAX_TASKS: u32 = 100_000;

/// Days finished tasks are kept by default (`[history] max_age_days`).
pub const HISTORY_MAX_AGE_DAYS: u32 = 30;

/// Submissions that may wait for a free slot by default (`[history] queue_max`).
pub const QUEUE_MAX: u32 = 1000;
/// The most tasks the gateway reads from one list of a node's `node_info`
/// (running, recently completed): a node runs a few at a time, so more is a
/// worker misbehaving, and the views and the history stay bounded.
pub const NODE_TASKS_MAX: usize = 1000;
/// The most bytes of one task's `method_kwargs` (and, for a running
/// subtask, its definition) the gateway keeps; bigger ones are replaced by
/// a note, and such a subtask cannot be put back on the queue.
pub const NODE_KWARGS_MAX_BYTES: usize = 64 * 1024;
/// A node's answer past this many bytes is large (an ordinary node_info is
/// a few KiB): it is read and parsed only under one of
/// [`NODE_LARGE_BODIES_AT_ONCE`] permits, off the runtime's threads, so a
/// fleet of misbehaving workers costs a bounded amount of memory and never
/// stalls the agent.
pub const NODE_LARGE_BODY_BYTES: usize = 256 * 1024;
/// The most subtask bars a task stream picture draws: the latest started.
/// A parent of more says how many it shows, so a huge partition (or a
/// worker reporting one) never makes a page of megabytes.
pub const TASK_STREAM_MAX_BARS: usize = 2_000;
/// How many large node answers are read and parsed at once.
pub const NODE_LARGE_BODIES_AT_ONCE: usize = 4;

/// The widest `--allow-cidr` taken without `--allow-anywhere` (a /8:
/// 16,777,216 addresses); `0.0.0.0/1` is half the internet.
pub const ALLOW_CIDR_WIDEST_PREFIX: u8 = 8;
/// Times a task the gateway sent is submitted again when it is lost with
/// its node (the parent's reply queue goes with the node, so its subtasks'
/// replies can no longer reach it). 0: never.
pub const PARENT_RETRIES: u32 = 1;

/// Bytes of a result payload kept in the history by default (`[history] result_bytes`).
pub const RESULT_BYTES: usize = 4096;

/// Seconds an autoscaled fleet stays idle before it shrinks, by default.
pub const AUTOSCALE_IDLE_WINDOW_SECS: u64 = 900;

/// The shortest time between two scale-ups on Fargate, in seconds (a task
/// takes about that long to start and answer).
pub const AUTOSCALE_UP_COOLDOWN_SECS: u64 = 20;
/// The same in local mode, whose workers start in a few seconds.
pub const LOCAL_AUTOSCALE_UP_COOLDOWN_SECS: u64 = 5;

/// Minutes a busy worker task's ECS scale-in protection lasts
/// (`UpdateTaskProtection`'s `expiresInMinutes`, 1 to 2880). The agent
/// renews it while the task stays busy, so it only runs out when the agent
/// itself is gone: then ECS may scale the task in again.
pub const TASK_PROTECTION_MINUTES: u32 = 60;

/// Minutes before a protection runs out when the agent renews it.
pub const TASK_PROTECTION_RENEW_MINUTES: u32 = 15;

/// Tasks one `UpdateTaskProtection` call takes.
pub const TASK_PROTECTION_BATCH: usize = 10;
/// The gateway's root volume (gp3, encrypted): the system, its packages and
/// two agent binaries, with room over the AMI's 8 GiB. Docker's data and the
/// state are on the data volume ([`DATA_VOLUME_GIB`]).
pub const ROOT_VOLUME_GIB: i32 = 12;
/// Amazon Linux 2023's root device.
pub const ROOT_DEVICE: &str = "/dev/xvda";
/// The gateway's data volume, GiB: the state directory (the history,
/// 100,000 tasks at most, and the queue) and Docker's data (the broker's
/// messages, the worker image's layers and build cache).
pub const DATA_VOLUME_GIB: i32 = 30;
/// The device name the data volume is attached as (on Nitro instances the
/// AMI's udev rules link it to the NVMe device).
pub const DATA_DEVICE: &str = "/dev/xvdf";
/// The device index of the lasting network interface.
pub const LASTING_INTERFACE_INDEX: i32 = 1;
/// How long a new gateway keeps trying to attach what the old one held
/// (EC2 frees it as the old instance finishes terminating).
pub const ATTACH_WAIT_SECS: u64 = 300;
/// The Auto Scaling group's health check grace: seconds after a launch
/// before EC2's status checks count against the new gateway.
pub const GATEWAY_GRACE_SECS: i32 = 300;
/// How long a call right after an EC2 create is retried while EC2 says what
/// was made does not exist yet (its API is eventually consistent).
pub const EC2_CONSISTENCY_SECS: u64 = 60;
/// How long `destroy` waits for the cluster's tasks to stop before it gives
/// up on DeleteCluster (ECS takes tens of seconds per task).
pub const DESTROY_TASKS_STOP_SECS: u64 = 600;

/// Service Quotas' service code for Fargate.
pub const FARGATE_QUOTA_SERVICE: &str = "fargate";
/// The quota code of "Fargate On-Demand vCPU resource count".
pub const FARGATE_ON_DEMAND_VCPU_QUOTA: &str = "L-3032A538";
/// The quota code of "Fargate Spot vCPU resource count".
pub const FARGATE_SPOT_VCPU_QUOTA: &str = "L-36FBB829";

/// History rows a page shows when not asked for a number.
pub const HISTORY_PAGE_ROWS: u32 = 50;

/// The broker container's log (RabbitMQ logs to its console, which
/// Docker's `json-file` driver keeps on the gateway's disk): each file's
/// largest size, as Docker's `max-size` option reads it…
pub const BROKER_LOG_MAX_SIZE: &str = "20m";
/// …and the files kept, the current one included (Docker's `max-file`).
pub const BROKER_LOG_FILES: u32 = 3;

/// The most notes [`crate::names::TAKEN_QUEUE`] keeps (RabbitMQ's
/// `x-max-length`, dropping the oldest) while no gateway reads it. Every
/// node declares the queue with it, and RabbitMQ refuses a declaration whose
/// arguments differ: never change it.
pub const TAKEN_QUEUE_MAX: u32 = 10_000;
/// How long the gateway keeps a note of a subtask taken by a node it has
/// not reached yet (it learns which worker a node is from its `node_info`).
pub const TAKEN_UNKNOWN_NODE_SECS: i64 = 600;

/// How full (per cent, as `df` counts) the gateway's Docker disk may be
/// before the agent says so in an event.
pub const DISK_WARN_PERCENT: u8 = 85;
/// How full it may be before the agent refuses to build a worker image.
pub const DISK_REFUSE_PERCENT: u8 = 95;

/// How long the agent waits at start for another process to let go of the
/// history file's lock before it keeps the history in memory instead
/// (never setting the file aside for a lock).
pub const HISTORY_OPEN_WAIT_SECS: u64 = 60;

/// Task observations the history's recorder keeps while its writes fail (a
/// full disk), to write once they work again; beyond this the oldest go.
pub const HISTORY_PENDING_MAX: usize = 100_000;

/// The most history rows one page or export returns.
pub const HISTORY_PAGE_MAX: u32 = 10_000;
/// The most bytes of stored arguments and results one history page holds
/// (at least one row); a page cut short carries the cursor to the next.
pub const HISTORY_PAGE_BYTES: usize = 8 * 1024 * 1024;

/// CloudWatch Logs reads (GetLogEvents) the agent makes at once. The
/// account's quota for GetLogEvents is 25 calls a second in a region, shared
/// with every other reader, so the agent keeps well under it however many
/// pages are open.
pub const LOG_READS_AT_ONCE: usize = 4;

/// The shortest time between two reads on one of those slots: at most
/// `LOG_READS_AT_ONCE` reads per this many milliseconds (10 a second).
pub const LOG_READ_SPACING_MS: u64 = 400;
/// The most GetLogEvents pages one read follows (empty pages before the
/// end, pages cut at 1 MB), so a read is bounded in calls.
pub const LOG_READ_PAGES: usize = 5;

/// How long a read of a log that may still grow is reused (pages refresh
/// every 2 s).
pub const LOG_CACHE_OPEN_SECS: u64 = 3;

/// How long a read of a time window that has ended is reused.
pub const LOG_CACHE_CLOSED_SECS: u64 = 600;

/// A window counts as ended this long after its end: CloudWatch may still
/// take in lines stamped before it.
pub const LOG_SETTLE_MS: i64 = 15_000;

/// Lines the log cache holds in all, and reads it keeps.
pub const LOG_CACHE_LINES: usize = 20_000;
/// See [`LOG_CACHE_LINES`].
pub const LOG_CACHE_READS: usize = 1_000;

/// Workers whose output one task's page shows (the rest are named).
pub const TASK_LOG_WORKERS: usize = 12;

/// A UI password that is too weak to guard the gateway.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{source_name} is {len} characters long; use at least {MIN_PASSWORD_LEN} (or unset it to have a strong one generated)")]
pub struct WeakPassword {
    /// Where the password came from, e.g. `GATEWAY_HTTP_PASSWORD`.
    pub source_name: &'static str,
    /// Its length in characters.
    pub len: usize,
}

/// Checks a password the user chose.
pub fn check_password(source_name: &'static str, password: &str) -> Result<(), WeakPassword> {
    let len = password.chars().count();
    if len < MIN_PASSWORD_LEN {
        return Err(WeakPassword { source_name, len });
    }
    Ok(())
}

/// The most models `/metrics` names in its task-duration series; tasks of
/// any further model are counted under `model="other"`, so a worker that
/// reports made-up class names cannot grow the series without bound.
pub const METRICS_MODELS_MAX: usize = 50;

/// Largest request the UI process may send the agent's core (its JSON
/// bodies are at most 64 KiB; a bigger frame ends the connection).
pub const UI_REQUEST_MAX_BYTES: usize = 1 << 20;
/// Largest answer the core sends the UI process (a snapshot of the largest
/// fleet, with every worker's task lists at their caps, fits).
pub const UI_ANSWER_MAX_BYTES: usize = 256 << 20;
/// Requests of the UI process the core serves at once; more wait.
pub const UI_REQUESTS_AT_ONCE: usize = 32;
/// How often the core looks for a new snapshot, events or secrets to push
/// to the UI process, in ms (a look that finds nothing new sends nothing).
pub const UI_PUSH_MS: u64 = 25;
/// How long the UI process waits for the core's answer to one request.
pub const UI_ANSWER_WAIT_SECS: u64 = 300;
/// Restarts of a UI process that keeps failing are spaced up to this.
pub const UI_RESTART_MAX_SECS: u64 = 30;

/// How long a lease written by an agent lasts, in seconds: another agent
/// takes over this long after the holder last renewed it (at once when the
/// holder gave it up on a clean stop).
pub const LEASE_SECS: i64 = 45;
/// How often the holder renews its lease, and a waiting agent looks again.
pub const LEASE_RENEW_SECS: u64 = 10;
/// The holder stops acting this long before its lease runs out when it
/// could not renew it, so clocks this far apart never let two agents act.
pub const LEASE_MARGIN_SECS: i64 = 10;

/// Seconds one attempt of an AWS call may take before it is abandoned and
/// retried (the SDK's operation attempt timeout). An API call answers in
/// well under a second; this is a call that will never answer.
pub const AWS_CALL_ATTEMPT_SECS: u64 = 30;
/// Seconds an AWS call may take with all its retries (the SDK's operation
/// timeout): after it, the call fails with a line naming it, so no duty,
/// poll or command waits for ever on AWS.
pub const AWS_CALL_SECS: u64 = 60;
/// Seconds an S3 transfer of a large body (the agent binary, the models
/// archive) may take, sending or reading the whole body.
pub const AWS_TRANSFER_SECS: u64 = 20 * 60;
/// Seconds a host command the agent runs (iptables, ethtool) may take
/// before it is killed and its duty's run fails naming it.
pub const HOST_COMMAND_SECS: u64 = 30;
/// Seconds `iptables -w` waits for the xtables lock another program holds
/// (iptables-legacy; the nf_tables backend takes no lock) before it gives
/// up with exit status 4.
pub const IPTABLES_WAIT_SECS: u64 = 10;
/// Seconds an image build may go without printing a line before it is
/// abandoned (pip resolving or downloading a large wheel prints at least
/// every few minutes).
pub const IMAGE_BUILD_QUIET_SECS: u64 = 10 * 60;
/// Seconds an image push may go without a progress message before it is
/// abandoned (the registry took the connection and stopped answering).
pub const IMAGE_PUSH_QUIET_SECS: u64 = 5 * 60;
/// Seconds the fleet's poller may go without finishing a round before the
/// agent counts it as frozen: `/healthz` says `stale` and the systemd
/// watchdog is no longer fed, so systemd restarts the agent. A round takes
/// at most a node timeout plus one AWS listing call.
pub const POLLER_STALE_SECS: i64 = 120;

/// Seconds after the broker container starts during which it is not
/// restarted for refusing logins: RabbitMQ reads a large backlog of durable
/// messages from disk before it accepts one, and a restart would only start
/// that again.
pub const BROKER_START_GRACE_SECS: i64 = 300;
/// Seconds between two readings of the broker's own status (its memory and
/// disk alarms, with figures); each starts an Erlang VM in the container
/// for about half a second of CPU.
pub const BROKER_STATUS_EVERY_SECS: u64 = 30;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_passwords_are_refused_with_the_rule() {
        let e = check_password("GATEWAY_HTTP_PASSWORD", "hunter2").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("GATEWAY_HTTP_PASSWORD") && msg.contains("12"),
            "{msg}"
        );
        assert!(
            !msg.contains("hunter2"),
            "the password itself is never echoed"
        );
        assert!(check_password("X", "correct horse battery").is_ok());
        assert!(
            check_password("X", "ééééééééééé").is_err(),
            "characters, not bytes"
        );
    }
}
