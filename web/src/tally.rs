//! What the history recorded of tasks and subtasks, counted as it is
//! committed: started, completed, failed, lost and put back on the queue,
//! and each finished run's duration by model. The agent keeps one
//! [`Tally`], seeded from the history at start and added to with every
//! batch the history takes, and the snapshot carries a copy. So `/metrics`
//! reads counters in memory and agrees with the history.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::metrics::{Family, Histogram};
use crate::task::{FossaTask, TaskStatus};

/// A task the gateway was sent, or a subtask of one (its id has `::`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// Submitted to the gateway or a node.
    Task,
    /// A partitioned task's part, sent between nodes through the broker.
    Subtask,
}

impl Kind {
    /// The kind of the task with this id.
    pub fn of(task_id: &str) -> Kind {
        if task_id.contains("::") {
            Kind::Subtask
        } else {
            Kind::Task
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Task => "task",
            Kind::Subtask => "subtask",
        }
    }
}

/// What happened to a run, as the history recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// Seen running (or finished) on a worker for the first time.
    Started,
    /// Complete.
    Completed,
    /// Failed.
    Failed,
    /// Its worker went away while it ran.
    Lost,
    /// A lost subtask the gateway put back on the broker's queue.
    Redelivered,
}

impl Outcome {
    /// Every outcome, in the order `/metrics` writes them.
    pub const ALL: [Outcome; 5] = [
        Outcome::Started,
        Outcome::Completed,
        Outcome::Failed,
        Outcome::Lost,
        Outcome::Redelivered,
    ];

    fn family(self) -> (&'static str, &'static str) {
        match self {
            Outcome::Started => (
                "fossa_tasks_started_total",
                "Tasks and subtasks first seen running on a worker, as the history recorded them.",
            ),
            Outcome::Completed => (
                "fossa_tasks_completed_total",
                "Tasks and subtasks that completed, as the history recorded them.",
            ),
            Outcome::Failed => (
                "fossa_tasks_failed_total",
                "Tasks and subtasks that failed, as the history recorded them.",
            ),
            Outcome::Lost => (
                "fossa_tasks_lost_total",
                "Runs lost with their worker (stopped, replaced or restarted while they ran).",
            ),
            Outcome::Redelivered => (
                "fossa_tasks_redelivered_total",
                "Lost subtasks the gateway put back on the broker's task queue.",
            ),
        }
    }
}

/// The buckets of task durations, in seconds (a second to four hours).
pub const TASK_BUCKETS: [f64; 10] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0,
];

/// Counts by kind and outcome, and durations by kind and model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    counts: BTreeMap<(Kind, Outcome), u64>,
    durations: BTreeMap<(Kind, String), Histogram>,
}

/// A [`Tally`] as plain lists (its maps have pairs for keys), for the UI
/// process's copy of the snapshot.
#[derive(Serialize, Deserialize)]
struct TallyLists {
    counts: Vec<(Kind, Outcome, u64)>,
    durations: Vec<(Kind, String, Vec<u64>, u64, f64)>,
}

impl Serialize for Tally {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        TallyLists {
            counts: self.counts.iter().map(|(&(k, o), &n)| (k, o, n)).collect(),
            durations: self
                .durations
                .iter()
                .map(|((k, m), h)| {
                    let (buckets, count, sum) = h.parts();
                    (*k, m.clone(), buckets.to_vec(), count, sum)
                })
                .collect(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Tally {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let lists = TallyLists::deserialize(d)?;
        Ok(Tally {
            counts: lists
                .counts
                .into_iter()
                .map(|(k, o, n)| ((k, o), n))
                .collect(),
            durations: lists
                .durations
                .into_iter()
                .map(|(k, m, b, count, sum)| {
                    let h = Histogram::from_parts(&TASK_BUCKETS, b, count, sum);
                    ((k, m), h)
                })
                .collect(),
        })
    }
}

impl Tally {
    /// Nothing counted yet.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.durations.is_empty()
    }

    /// Adds `n` to `kind`'s `outcome`.
    pub fn add(&mut self, kind: Kind, outcome: Outcome, n: u64) {
        *self.counts.entry((kind, outcome)).or_default() += n;
    }

    /// Adds everything `other` counted (its durations too).
    pub fn absorb(&mut self, other: Tally) {
        for (k, n) in other.counts {
            *self.counts.entry(k).or_default() += n;
        }
        for (k, h) in other.durations {
            match self.durations.get_mut(&k) {
                Some(mine) => mine.merge(&h),
                None => {
                    self.durations.insert(k, h);
                }
            }
        }
    }

    /// `kind`'s `outcome` so far.
    pub fn get(&self, kind: Kind, outcome: Outcome) -> u64 {
        self.counts.get(&(kind, outcome)).copied().unwrap_or(0)
    }

    /// Counts a run that finished: its outcome, and (when it says when it
    /// started and finished) its duration under its model.
    pub fn finished(&mut self, t: &FossaTask) {
        let kind = Kind::of(&t.task_id);
        let outcome = match t.status {
            TaskStatus::Complete => Outcome::Completed,
            TaskStatus::Failed => Outcome::Failed,
            TaskStatus::Lost => Outcome::Lost,
            _ => return,
        };
        self.add(kind, outcome, 1);
        if outcome == Outcome::Lost {
            return;
        }
        let (Some(started), Some(finished)) = (t.started, t.finished) else {
            return;
        };
        let model = if self.durations.contains_key(&(kind, t.model_class.clone()))
            || self.durations.len() < fossa_contract::limits::METRICS_MODELS_MAX
        {
            t.model_class.clone()
        } else {
            "other".to_owned()
        };
        self.durations
            .entry((kind, model))
            .or_insert_with(|| Histogram::with_bounds(&TASK_BUCKETS))
            .observe((finished - started).max(0) as f64);
    }

    /// The families `/metrics` serves: every outcome of both kinds (0
    /// rather than absent), and the durations.
    pub fn families(&self) -> Vec<Family> {
        let mut out = Vec::new();
        for outcome in Outcome::ALL {
            let (name, help) = outcome.family();
            let mut f = Family::counter(name, help);
            for kind in [Kind::Task, Kind::Subtask] {
                f = f.with(&[("kind", kind.as_str())], self.get(kind, outcome) as f64);
            }
            out.push(f);
        }
        let mut d = Family::histogram(
            "fossa_task_duration_seconds",
            "How long finished tasks and subtasks ran (complete or failed), by kind and model.",
        );
        for ((kind, model), h) in &self.durations {
            d = d.observed(&[("kind", kind.as_str()), ("model", model)], h);
        }
        out.push(d);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, model: &str, status: TaskStatus, secs: i64) -> FossaTask {
        FossaTask {
            task_id: id.into(),
            model_class: model.into(),
            method: None,
            method_kwargs: serde_json::Value::Null,
            status,
            started: Some(100),
            finished: Some(100 + secs),
            results: None,
            spec: Default::default(),
        }
    }

    #[test]
    fn outcomes_count_by_kind_and_durations_by_model() {
        let mut t = Tally::default();
        t.finished(&run("a", "M", TaskStatus::Complete, 3));
        t.finished(&run("p:0::amq.gen-1", "M", TaskStatus::Complete, 70));
        t.finished(&run("p:1::amq.gen-1", "M", TaskStatus::Lost, 0));
        t.finished(&run("b", "M", TaskStatus::Running, 0));
        assert_eq!(t.get(Kind::Task, Outcome::Completed), 1);
        assert_eq!(t.get(Kind::Subtask, Outcome::Completed), 1);
        assert_eq!(t.get(Kind::Subtask, Outcome::Lost), 1);
        assert_eq!(t.get(Kind::Task, Outcome::Started), 0);
        let text = crate::metrics::render(&t.families());
        assert!(
            text.contains("fossa_tasks_completed_total{kind=\"subtask\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("fossa_tasks_redelivered_total{kind=\"task\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "fossa_task_duration_seconds_bucket{kind=\"subtask\",model=\"M\",le=\"300\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("fossa_task_duration_seconds_count{kind=\"task\",model=\"M\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn a_seed_from_the_history_keeps_what_was_counted_meanwhile() {
        let mut meanwhile = Tally::default();
        meanwhile.finished(&run("a", "M", TaskStatus::Complete, 3));
        let mut seed = Tally::default();
        seed.add(Kind::Task, Outcome::Completed, 40);
        seed.finished(&run("b", "M", TaskStatus::Complete, 9));
        seed.absorb(meanwhile);
        assert_eq!(seed.get(Kind::Task, Outcome::Completed), 42);
        assert_eq!(seed.durations[&(Kind::Task, "M".to_owned())].count(), 2);
    }

    #[test]
    fn made_up_models_share_one_series_past_the_bound() {
        let mut t = Tally::default();
        for i in 0..fossa_contract::limits::METRICS_MODELS_MAX + 20 {
            t.finished(&run("a", &format!("M{i}"), TaskStatus::Complete, 1));
        }
        assert_eq!(
            t.durations.len(),
            fossa_contract::limits::METRICS_MODELS_MAX + 1
        );
        assert_eq!(t.durations[&(Kind::Task, "other".to_owned())].count(), 20);
    }
}
