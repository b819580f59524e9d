//! Failed logins per client address, bounded in size.
//!
//! The key is the TCP peer's address (never a header a client can set), an
//! IPv6 address cut to its /64, since one host usually owns the whole /64. A
//! failure is counted *before* the password is checked, so many guesses in
//! parallel cannot get past the limit; a success forgets the address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed logins allowed per address within [`WINDOW`].
pub const MAX_FAILURES: u32 = 5;
/// The window failed logins are counted in.
pub const WINDOW: Duration = Duration::from_secs(300);
/// Addresses tracked at most; past it the expired and then the oldest go.
pub const MAX_TRACKED: usize = 4096;

/// The limiter.
#[derive(Debug, Default)]
pub struct Limiter {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// The address a failure is counted under.
pub fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Limiter {
    /// Whether `ip` has failed too often within the window.
    pub fn blocked(&self, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip.map(key) else { return false };
        let mut f = self.failures.lock().expect("lock");
        match f.get(&ip) {
            Some((_, first)) if first.elapsed() > WINDOW => {
                f.remove(&ip);
                false
            }
            Some((n, _)) => *n >= MAX_FAILURES,
            None => false,
        }
    }

    /// Counts an attempt as a failure before it is checked; `false` when the
    /// address has no attempt left (answer 429 without checking).
    pub fn begin(&self, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip.map(key) else { return true };
        let mut f = self.failures.lock().expect("lock");
        let now = Instant::now();
        if let Some((_, first)) = f.get(&ip) {
            if now.duration_since(*first) > WINDOW {
                f.remove(&ip);
            }
        }
        if !f.contains_key(&ip) && f.len() >= MAX_TRACKED {
            f.retain(|_, (_, first)| now.duration_since(*first) <= WINDOW);
            if f.len() >= MAX_TRACKED {
                let oldest = f.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k);
                if let Some(k) = oldest {
                    f.remove(&k);
                }
            }
        }
        let e = f.entry(ip).or_insert((0, now));
        if e.0 >= MAX_FAILURES {
            return false;
        }
        e.0 += 1;
        true
    }

    /// Forgets `ip` after a success (its counted attempt included).
    pub fn succeeded(&self, ip: Option<IpAddr>) {
        if let Some(ip) = ip.map(key) {
            self.failures.lock().expect("lock").remove(&ip);
        }
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.failures.lock().expect("lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_repeated_failures_counted_first() {
        let l = Limiter::default();
        let ip = Some("203.0.113.9".parse().unwrap());
        for _ in 0..MAX_FAILURES {
            assert!(!l.blocked(ip));
            assert!(l.begin(ip));
        }
        assert!(l.blocked(ip));
        assert!(!l.begin(ip), "no attempt left, none checked");
        assert!(!l.blocked(Some("203.0.113.10".parse().unwrap())));
        l.succeeded(ip);
        assert!(!l.blocked(ip));
    }

    #[test]
    fn an_ipv6_host_cannot_rotate_addresses_within_its_64() {
        let l = Limiter::default();
        for i in 0..MAX_FAILURES {
            let ip: IpAddr = format!("2001:db8:1:2::{i:x}").parse().unwrap();
            assert!(l.begin(Some(ip)));
        }
        assert!(l.blocked(Some("2001:db8:1:2:ffff::1".parse().unwrap())));
        assert!(!l.blocked(Some("2001:db8:1:3::1".parse().unwrap())));
    }

    #[test]
    fn the_map_is_bounded() {
        let l = Limiter::default();
        for i in 0..(MAX_TRACKED as u32 + 500) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            l.begin(Some(ip));
        }
        assert_eq!(l.tracked(), MAX_TRACKED);
    }
}
