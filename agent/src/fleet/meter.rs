//! The fleet's meters: slots in use over the last hour (the overview's
//! chart) and this month's cost, ticked at every refresh and kept in the
//! history database. Each owns its state; the fleet model asks them for the
//! snapshot's figures.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fossa_web::model::{Cost, Health, SlotSample, Worker};

use crate::history::{History, Meter};

/// The longest gap between two refreshes the cost meter counts (a stalled
/// or stopped agent does not invent hours).
const METER_MAX_GAP: Duration = Duration::from_secs(60);
/// How often the meter is written to the history database.
const METER_SAVE_EVERY: Duration = Duration::from_secs(60);

/// Seconds each slots-in-use sample covers (its peak is kept).
const SLOT_SAMPLE_SECS: i64 = 30;
/// Samples kept: one hour.
const SLOT_SAMPLES: usize = 120;

/// Slots in use, one sample per [`SLOT_SAMPLE_SECS`], the last hour.
#[derive(Debug, Default)]
pub struct SlotSamples(Mutex<VecDeque<SlotSample>>);

impl SlotSamples {
    /// Adds the slots `workers` use at `now` to the samples, and returns them all.
    pub fn sample(&self, workers: &[Worker], now: i64) -> Vec<SlotSample> {
        let (mut used, mut total) = (0u32, 0u32);
        for w in workers.iter().filter(|w| w.health == Health::Ok) {
            if let Some(n) = &w.node {
                total += n.max_concurrent_tasks;
                used += n
                    .max_concurrent_tasks
                    .saturating_sub(n.available_processing_capacity);
            }
        }
        let mut q = self.0.lock().expect("lock");
        match q.back_mut() {
            Some(last) if now - last.at < SLOT_SAMPLE_SECS => {
                last.used = last.used.max(used);
                last.total = total;
            }
            _ => {
                if q.len() == SLOT_SAMPLES {
                    q.pop_front();
                }
                q.push_back(SlotSample {
                    at: now,
                    used,
                    total,
                });
            }
        }
        q.iter().copied().collect()
    }
}

/// This month's cost meter, kept in the history database.
pub struct CostMeter {
    history: Arc<History>,
    /// The meter, when last ticked, and when last kept.
    state: Mutex<Option<(Meter, Instant, Instant)>>,
}

impl CostMeter {
    /// A meter that starts from what `history` kept for this month.
    pub fn new(history: Arc<History>) -> Self {
        CostMeter {
            history,
            state: Mutex::new(None),
        }
    }

    /// Adds the time since the last tick to this month's meter, at `cost`'s
    /// hourly figures, and fills in the month-to-date figures.
    pub fn tick(&self, mut cost: Cost) -> Cost {
        let now = Instant::now();
        let month = crate::duties::nat::traffic::month_of(fossa_contract::unix_now());
        let mut slot = self.state.lock().expect("lock");
        let (m, last, saved) = slot.get_or_insert_with(|| (self.history.meter(&month), now, now));
        if m.month != month {
            *m = Meter {
                month: month.clone(),
                ..Default::default()
            };
        }
        let gap = now.duration_since(*last);
        if gap <= METER_MAX_GAP {
            let h = gap.as_secs_f64() / 3600.0;
            m.hours += h;
            m.dollars += h * cost.stack_hourly;
            m.gateway_dollars += h * cost.gateway_hourly;
            m.nat_gateway_hour_dollars += h * cost.nat_gateway_hourly;
        }
        *last = now;
        if now.duration_since(*saved) >= METER_SAVE_EVERY {
            *saved = now;
            self.history.save_meter(m.clone());
        }
        // NAT bytes count for the month the NAT duty counted them in.
        if cost.month != m.month {
            cost.nat_bytes = 0;
        }
        let gb = cost.nat_bytes as f64 / 1e9;
        cost.month = m.month.clone();
        cost.metered_hours = m.hours;
        cost.month_to_date = m.dollars;
        cost.nat_gateway_month_to_date = m.nat_gateway_hour_dollars + gb * cost.nat_gateway_per_gb;
        cost.saved_month_to_date = cost.nat_gateway_month_to_date - m.gateway_dollars;
        cost
    }

    /// Keeps the meter now (on the way out).
    pub fn save(&self) {
        if let Some((m, _, _)) = self.state.lock().expect("lock").as_ref() {
            self.history.save_meter_now(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fossa_web::model::NodeInfo;

    fn worker(max: u32, free: u32, health: Health) -> Worker {
        Worker {
            id: "w".into(),
            health,
            node: Some(NodeInfo {
                max_concurrent_tasks: max,
                available_processing_capacity: free,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_sample_keeps_its_peak_and_the_hour_is_bounded() {
        let s = SlotSamples::default();
        s.sample(&[worker(4, 1, Health::Ok)], 1000);
        let v = s.sample(&[worker(4, 3, Health::Ok)], 1010);
        assert_eq!(v.len(), 1);
        assert_eq!(
            (v[0].used, v[0].total),
            (3, 4),
            "the peak of the 30 s stays"
        );
        let v = s.sample(
            &[worker(4, 3, Health::Ok), worker(9, 0, Health::Unknown)],
            1030,
        );
        assert_eq!(v.len(), 2);
        assert_eq!(
            (v[1].used, v[1].total),
            (1, 4),
            "a worker not answering is not counted"
        );
        for i in 0..200 {
            s.sample(&[], 2000 + i * SLOT_SAMPLE_SECS);
        }
        assert_eq!(s.sample(&[], 9_999_999).len(), SLOT_SAMPLES);
    }
}
