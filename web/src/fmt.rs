//! Formatting of times, durations and results for the pages.

use serde_json::Value;

/// `YYYY-MM-DD HH:MM:SS` (UTC) for seconds since the epoch.
pub fn time(epoch: i64) -> String {
    let t = fossa_contract::utc(epoch);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// RFC 3339 UTC (`2026-11-26T05:50:15Z`), for exports.
pub fn iso_time(epoch: i64) -> String {
    format!("{}Z", time(epoch).replace(' ', "T"))
}

/// [`time`] of an optional value, or `-`.
pub fn opt_time(epoch: Option<i64>) -> String {
    epoch.map(time).unwrap_or_else(|| "-".into())
}

/// `1h 02m`, `3m 04s` or `5s`.
pub fn duration(secs: Option<i64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) if s >= 3600 => format!("{}h {:02}m", s / 3600, s / 60 % 60),
        Some(s) if s >= 60 => format!("{}m {:02}s", s / 60, s % 60),
        Some(s) => format!("{s}s"),
    }
}

/// The whole result, pretty-printed.
pub fn result_full(results: Option<&Value>) -> String {
    results
        .map(|r| serde_json::to_string_pretty(r).unwrap_or_default())
        .unwrap_or_else(|| "-".into())
}

/// A one-line summary of a result, at most 100 characters.
pub fn result_short(results: Option<&Value>) -> String {
    let Some(r) = results else {
        return String::new();
    };
    let kind = r.get("type").and_then(Value::as_str).unwrap_or("");
    // A completed task's payload repeats the request; its return value is what matters.
    let payload = r
        .get("payload")
        .map(|p| p.get("return_value").unwrap_or(p))
        .map(Value::to_string)
        .unwrap_or_default();
    let mut s = format!("{kind} {payload}");
    if s.len() > 100 {
        let mut cut = 97;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_and_durations() {
        assert_eq!(time(0), "1970-01-01 00:00:00");
        assert_eq!(time(1_764_041_400), "2025-11-25 03:30:00");
        assert_eq!(duration(Some(5)), "5s");
        assert_eq!(duration(Some(125)), "2m 05s");
        assert_eq!(duration(Some(3720)), "1h 02m");
        assert_eq!(duration(None), "-");
    }

    #[test]
    fn shortens_results_on_a_char_boundary() {
        let v = serde_json::json!({"type": "TaskComplete", "payload": "é".repeat(200)});
        let s = result_short(Some(&v));
        assert!(s.chars().count() <= 100 && s.ends_with('…'));
    }
}
