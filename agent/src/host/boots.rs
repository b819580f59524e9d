//! The instances that mounted the gateway's data volume: user-data appends
//! `<instance id> <UTC time>` to `<state dir>/instances` at each boot (after
//! taking the volume over). Two different ids last mean this gateway
//! replaced another, whose history, queue and keys it came back with.

use std::path::Path;

use fossa_web::model::Replacement;

/// The file's name in the state directory.
pub const FILE: &str = "instances";

/// Whether the last boot was a replacement, from the file's text.
pub fn replacement(text: &str) -> Option<Replacement> {
    let boots: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?, w.next()?))
        })
        .collect();
    let (current, _) = *boots.last()?;
    let before = boots.iter().rposition(|(id, _)| *id != current)?;
    Some(Replacement {
        previous: boots[before].0.to_owned(),
        current: current.to_owned(),
        at: boots[before + 1].1.to_owned(),
    })
}

/// [`replacement`] of the state directory's file; none when it is absent
/// (local mode, or a host user-data did not set up).
pub fn read(state_dir: &Path) -> Option<Replacement> {
    let text = std::fs::read_to_string(state_dir.join(FILE)).ok()?;
    replacement(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_id_after_another_is_a_replacement() {
        assert_eq!(replacement(""), None);
        assert_eq!(
            replacement("i-a 2026-12-06T01:00:00Z\n"),
            None,
            "the first boot"
        );
        let r = replacement("i-a 2026-12-06T01:00:00Z\ni-b 2026-12-06T02:00:00Z\n").unwrap();
        assert_eq!(
            (r.previous.as_str(), r.current.as_str(), r.at.as_str()),
            ("i-a", "i-b", "2026-12-06T02:00:00Z")
        );
        // A reboot of the same instance is not one; the replacement's time stays.
        let r = replacement("i-a t1\ni-b t2\ni-b t3\n").unwrap();
        assert_eq!(
            (r.previous.as_str(), r.current.as_str(), r.at.as_str()),
            ("i-a", "i-b", "t2")
        );
        assert_eq!(replacement("i-a t1\ni-a t2\n"), None);
        assert_eq!(replacement("garbage\n\n"), None);
    }
}
