//! How full a filesystem is, and what the agent does about it: an event
//! from [`fossa_contract::limits::DISK_WARN_PERCENT`], and image builds
//! refused from [`fossa_contract::limits::DISK_REFUSE_PERCENT`] (a build
//! that fills the gateway's disk takes the broker and the history with it).

use std::path::Path;

use fossa_contract::limits::{DISK_REFUSE_PERCENT, DISK_WARN_PERCENT};

/// What a filesystem's use calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// Below the warning.
    Fine,
    /// At or past the warning: say so.
    Low(u8),
    /// At or past the refusal: no builds.
    Full(u8),
}

/// The percentage of the space ordinary users may use that is in use, as
/// `df` counts it: used / (used + available to them), rounded up.
pub fn used_percent(path: &Path) -> std::io::Result<u8> {
    let s = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let frsize = s.fragment_size() as u128;
    let used = (s.blocks() as u128 - s.blocks_free() as u128) * frsize;
    let avail = s.blocks_available() as u128 * frsize;
    Ok(percent(used, avail))
}

fn percent(used: u128, avail: u128) -> u8 {
    if used + avail == 0 {
        return 0;
    }
    (used * 100).div_ceil(used + avail).min(100) as u8
}

/// What `used` percent calls for.
pub fn room(used: u8) -> Room {
    if used >= DISK_REFUSE_PERCENT {
        Room::Full(used)
    } else if used >= DISK_WARN_PERCENT {
        Room::Low(used)
    } else {
        Room::Fine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thresholds_and_the_count_df_makes() {
        assert_eq!(room(84), Room::Fine);
        assert_eq!(room(85), Room::Low(85));
        assert_eq!(room(94), Room::Low(94));
        assert_eq!(room(95), Room::Full(95));
        assert_eq!(room(100), Room::Full(100));
        assert_eq!(percent(59, 33), 65, "df's 64 % is 59/(59+33) rounded up");
        assert_eq!(percent(0, 0), 0);
        assert_eq!(percent(10, 0), 100);
        let here = used_percent(Path::new("/")).unwrap();
        assert!(here <= 100);
    }
}
