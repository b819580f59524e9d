//! Server-rendered SVG pictures, readable without JavaScript: a partitioned
//! task's task stream (one row per worker, one bar per subtask in time, as
//! dask's dashboard draws it) and the overview's slots-in-use chart.
//! Every text is escaped; the pictures are inline `<svg>` in the page.

use std::fmt::Write;

use crate::model::SlotSample;
use crate::model::{TaskRow, TaskStatus};
use crate::views::Group;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Width of the plotting area, in SVG units.
const PLOT_W: f64 = 720.0;
/// Left margin for the worker names.
const LABEL_W: f64 = 140.0;
/// Height of one worker's row.
const ROW_H: f64 = 22.0;

/// A status's bar colour.
fn colour(status: &TaskStatus) -> &'static str {
    match status {
        TaskStatus::Complete => "#2e7d32",
        TaskStatus::Failed | TaskStatus::Lost => "#c62828",
        TaskStatus::Running => "#1565c0",
        _ => "#9e9e9e",
    }
}

/// Done (complete or failed) and seen subtasks of `groups`.
pub fn progress(groups: &[Group]) -> (usize, usize) {
    let seen = groups.iter().map(|g| g.subtasks.len()).sum();
    let done = groups
        .iter()
        .flat_map(|g| &g.subtasks)
        .filter(|s| matches!(s.task.status, TaskStatus::Complete | TaskStatus::Failed))
        .count();
    (done, seen)
}

/// The task stream of `parent`'s subtask `groups`: one row per worker, one
/// bar per subtask from its start to its end (or `now` while it runs), the
/// parent's own span as a thin band on top. `None` when nothing has a time.
pub fn task_stream(parent: &TaskRow, groups: &[Group], now: i64) -> Option<String> {
    let mut subs: Vec<&TaskRow> = groups.iter().flat_map(|g| &g.subtasks).collect();
    let total = subs.len();
    let max = fossa_contract::limits::TASK_STREAM_MAX_BARS;
    if total > max {
        // The latest started: the running ones and what just ended.
        subs.sort_by_key(|s| std::cmp::Reverse(s.task.started));
        subs.truncate(max);
    }
    let shown = if total > max {
        format!("the latest {} of {total}", subs.len())
    } else {
        total.to_string()
    };
    let start = subs
        .iter()
        .filter_map(|s| s.task.started)
        .chain(parent.task.started)
        .min()?;
    let end_of = |t: &TaskRow| {
        t.task
            .finished
            .unwrap_or(now)
            .max(t.task.started.unwrap_or(now))
    };
    let end = subs
        .iter()
        .map(|s| end_of(s))
        .chain(std::iter::once(end_of(parent)))
        .max()?
        .max(start.saturating_add(1));
    let mut workers: Vec<&str> = subs.iter().map(|s| s.worker_id.as_str()).collect();
    workers.sort_unstable();
    workers.dedup();
    let span = end.saturating_sub(start) as f64;
    let x = |t: i64| LABEL_W + t.saturating_sub(start) as f64 / span * PLOT_W;
    // Subtasks that overlap on one worker (its task slots) go on lanes of
    // its row, as dask's task stream draws threads.
    let rows: Vec<(&str, Vec<Vec<&TaskRow>>)> = workers
        .iter()
        .map(|w| {
            let mut mine: Vec<&TaskRow> = subs
                .iter()
                .copied()
                .filter(|s| s.worker_id == *w && s.task.started.is_some())
                .collect();
            mine.sort_by_key(|s| s.task.started);
            let mut lanes: Vec<Vec<&TaskRow>> = Vec::new();
            for s in mine {
                let st = s.task.started.unwrap_or(start);
                match lanes
                    .iter_mut()
                    .find(|l| l.last().is_some_and(|p| end_of(p) <= st))
                {
                    Some(l) => l.push(s),
                    None => lanes.push(vec![s]),
                }
            }
            (*w, lanes)
        })
        .collect();
    let lane_h = |n: usize| (ROW_H / n.max(1) as f64).max(6.0);
    let row_h = |n: usize| lane_h(n) * n.max(1) as f64;
    let top = 30.0;
    let body: f64 = rows.iter().map(|(_, l)| row_h(l.len()) + 4.0).sum();
    let height = top + body.max(ROW_H) + 24.0;
    let width = LABEL_W + PLOT_W + 10.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="stream" viewBox="0 0 {width} {height:.1}" width="100%" role="img" aria-label="Task stream: {n} subtasks on {w} workers over {span} s">"#,
        n = shown,
        w = workers.len(),
        span = end.saturating_sub(start),
    );
    // The parent's span.
    let (ps, pe) = (parent.task.started.unwrap_or(start), end_of(parent));
    let _ = write!(
        svg,
        r#"<text x="4" y="16" class="label">parent</text><rect x="{:.1}" y="8" width="{:.1}" height="10" fill="{}" opacity="0.5"><title>{} {}: {}</title></rect>"#,
        x(ps),
        (x(pe) - x(ps)).max(1.0),
        colour(&parent.task.status),
        esc(&parent.task.task_id),
        esc(parent.task.status.as_str()),
        esc(&crate::fmt::duration(Some(pe.saturating_sub(ps)))),
    );
    let mut y = top;
    for (w, lanes) in &rows {
        let h = row_h(lanes.len());
        let _ = write!(
            svg,
            r##"<text x="4" y="{:.1}" class="label">{}</text><line x1="{LABEL_W}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            y + h / 2.0 + 4.0,
            esc(&short(w, 18)),
            y + h + 2.0,
            LABEL_W + PLOT_W,
            y + h + 2.0,
        );
        let lh = lane_h(lanes.len());
        for (k, lane) in lanes.iter().enumerate() {
            for s in lane {
                let (st, fin) = (s.task.started.unwrap_or(start), end_of(s));
                let idx = s
                    .task
                    .subtask_parts()
                    .map(|p| format!("#{} ", p.1))
                    .unwrap_or_default();
                let _ = write!(
                    svg,
                    r##"<rect class="bar" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}" stroke="#fff" stroke-width="0.5"><title>{}{} {} on {}: {}</title></rect>"##,
                    x(st),
                    y + lh * k as f64,
                    (x(fin) - x(st)).max(2.0),
                    (lh - 1.0).max(1.0),
                    colour(&s.task.status),
                    idx,
                    esc(s.task.method.as_deref().unwrap_or("")),
                    esc(s.task.status.as_str()),
                    esc(w),
                    esc(&crate::fmt::duration(Some(fin.saturating_sub(st)))),
                );
            }
        }
        y += h + 4.0;
    }
    let axis_y = y.max(top + ROW_H) + 12.0;
    let _ = write!(
        svg,
        r#"<text x="{LABEL_W}" y="{axis_y:.1}" class="axis">{}</text><text x="{:.1}" y="{axis_y:.1}" class="axis" text-anchor="end">+{} s</text></svg>"#,
        esc(&crate::fmt::time(start)),
        LABEL_W + PLOT_W,
        end.saturating_sub(start),
    );
    Some(svg)
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// Slots in use (filled) against slots in all (line) over the samples'
/// span, as a small chart. `None` with fewer than two samples.
pub fn slots(samples: &[SlotSample]) -> Option<String> {
    if samples.len() < 2 {
        return None;
    }
    let (w, h) = (600.0, 80.0);
    let t0 = samples.first()?.at;
    let t1 = samples.last()?.at.max(t0.saturating_add(1));
    let top = samples.iter().map(|s| s.total.max(s.used)).max()?.max(1) as f64;
    let x = |t: i64| t.saturating_sub(t0) as f64 / t1.saturating_sub(t0) as f64 * w;
    let y = |v: u32| h - f64::from(v) / top * (h - 4.0);
    // Steps: each sample holds its bucket's peak until the next sample.
    let mut used = format!("M0,{h} ");
    let mut total = String::new();
    for (i, s) in samples.iter().enumerate() {
        let x0 = x(s.at);
        let x1 = samples.get(i + 1).map_or(w, |n| x(n.at));
        let _ = write!(used, "L{x0:.1},{:.1} L{x1:.1},{:.1} ", y(s.used), y(s.used));
        let _ = write!(
            total,
            "{}{x0:.1},{:.1} L{x1:.1},{:.1} ",
            if i == 0 { "M" } else { "L" },
            y(s.total),
            y(s.total)
        );
    }
    let _ = write!(used, "L{w:.1},{h} Z");
    let last = samples.last()?;
    let peak = samples.iter().map(|s| s.used).max()?;
    Some(format!(
        r##"<svg class="slots" viewBox="0 0 {w} {h}" width="100%" height="80" preserveAspectRatio="none" role="img" aria-label="Task slots in use over the last {mins} min: now {u} of {t}, peak {peak}"><path d="{used}" fill="#1565c0" opacity="0.35"/><path d="{total}" fill="none" stroke="#555" stroke-width="1"/><title>slots in use: now {u} of {t}, peak {peak}</title></svg>"##,
        mins = t1.saturating_sub(t0).saturating_add(59) / 60,
        u = last.used,
        t = last.total,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FossaTask;

    fn row(id: &str, worker: &str, status: &str, started: i64, finished: Option<i64>) -> TaskRow {
        TaskRow {
            task: FossaTask {
                task_id: id.into(),
                model_class: "E".into(),
                method: Some("work<&>".into()),
                method_kwargs: serde_json::Value::Null,
                status: status.into(),
                started: Some(started),
                finished,
                results: None,
                spec: Default::default(),
            },
            worker_id: worker.into(),
            worker_address: String::new(),
        }
    }

    #[test]
    fn the_stream_has_a_row_per_worker_and_a_bar_per_subtask_escaped() {
        let parent = row("p", "w<1>", "running", 100, None);
        let subs = vec![
            row("pl:0::q", "w<1>", "complete", 101, Some(103)),
            row("pl:1::q", "w2", "complete", 101, Some(104)),
            row("pl:2::q", "w2", "running", 104, None),
        ];
        let g = Group {
            pool_id: "pl".into(),
            reply_to: "q".into(),
            model_class: "E".into(),
            subtasks: subs,
            workers: vec!["w2".into(), "w<1>".into()],
            certain: true,
            candidates: vec!["p".into()],
        };
        let svg = task_stream(&parent, std::slice::from_ref(&g), 110).unwrap();
        assert_eq!(svg.matches(r#"class="bar""#).count(), 3);
        assert_eq!(
            svg.matches(r#"class="label""#).count(),
            3,
            "parent + 2 workers"
        );
        assert!(svg.contains("w&lt;1&gt;") && !svg.contains("w<1>"));
        assert!(svg.contains("work&lt;&amp;&gt;"));
        assert!(svg.contains("+10 s"), "{svg}");
        assert_eq!(progress(&[g]), (2, 3));
    }

    #[test]
    fn a_huge_partition_draws_its_latest_bars_and_says_so() {
        let max = fossa_contract::limits::TASK_STREAM_MAX_BARS;
        let n = max * 50;
        let parent = row("p", "w", "running", 0, None);
        let subs: Vec<TaskRow> = (0..n)
            .map(|i| {
                let t = i as i64;
                row(
                    &format!("pl:{i}::q"),
                    &format!("w{}", i % 300),
                    "complete",
                    t,
                    Some(t + 1),
                )
            })
            .collect();
        let g = Group {
            pool_id: "pl".into(),
            reply_to: "q".into(),
            model_class: "E".into(),
            subtasks: subs,
            workers: Vec::new(),
            certain: true,
            candidates: vec!["p".into()],
        };
        let svg = task_stream(&parent, std::slice::from_ref(&g), n as i64 + 5).unwrap();
        assert_eq!(svg.matches(r#"class="bar""#).count(), max);
        assert!(
            svg.contains(&format!("the latest {max} of {n} subtasks")),
            "{}",
            &svg[..300]
        );
        assert!(svg.contains(&format!("#{} ", n - 1)), "the latest is drawn");
        assert!(!svg.contains("#0 "), "the earliest is not");
        assert!(svg.len() < 2_000_000, "{} bytes", svg.len());
    }

    #[test]
    fn the_slots_chart_needs_two_samples_and_says_the_peak() {
        let s = |at, used, total| SlotSample { at, used, total };
        assert!(slots(&[s(0, 1, 4)]).is_none());
        let svg = slots(&[s(0, 1, 4), s(30, 4, 4), s(60, 2, 8)]).unwrap();
        assert!(svg.contains("now 2 of 8, peak 4"), "{svg}");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }
}
