//! How berth writes figures for people, the same on the status page and in `berth routes`:
//! ages, durations, rates and container identities.

use std::time::Duration;

/// A past moment's distance from now, short: `850ms`, `4.2s`, `12s`, `3m`, `5h`, `2d`.
pub fn age(elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs < 1.0 {
        format!("{}ms", elapsed.as_millis())
    } else if secs < 10.0 {
        format!("{secs:.1}s")
    } else if secs < 120.0 {
        format!("{secs:.0}s")
    } else if secs < 2.0 * 3600.0 {
        format!("{:.0}m", secs / 60.0)
    } else if secs < 2.0 * 86400.0 {
        format!("{:.0}h", secs / 3600.0)
    } else {
        format!("{:.0}d", secs / 86400.0)
    }
}

/// A latency in seconds, about three significant digits: `0.42ms`, `4.25ms`, `12.5ms`,
/// `250ms`, `1.20s`.
pub fn latency(seconds: f64) -> String {
    let ms = seconds * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2}ms")
    } else if ms < 100.0 {
        format!("{ms:.1}ms")
    } else if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{seconds:.2}s")
    }
}

/// Events per second: `0`, `0.02`, `3.5`, `1,250`.
pub fn rate(per_second: f64) -> String {
    if per_second == 0.0 {
        "0".into()
    } else if per_second < 0.1 {
        format!("{per_second:.2}")
    } else if per_second < 100.0 {
        format!("{per_second:.1}")
    } else {
        thousands(per_second.round() as u64)
    }
}

/// `1234567` -> `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// The first 12 characters of a container id, as `docker ps` shows it.
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_like_an_operator_writes_them() {
        assert_eq!(age(Duration::from_millis(850)), "850ms");
        assert_eq!(age(Duration::from_millis(4_240)), "4.2s");
        assert_eq!(age(Duration::from_secs(75)), "75s");
        assert_eq!(age(Duration::from_secs(600)), "10m");
        assert_eq!(age(Duration::from_secs(5 * 3600)), "5h");
        assert_eq!(age(Duration::from_secs(3 * 86400)), "3d");
        assert_eq!(latency(0.000_42), "0.42ms");
        assert_eq!(latency(0.004_25), "4.25ms");
        assert_eq!(latency(0.0125), "12.5ms");
        assert_eq!(latency(0.25), "250ms");
        assert_eq!(latency(1.2), "1.20s");
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(0.016), "0.02");
        assert_eq!(rate(3.46), "3.5");
        assert_eq!(rate(1250.4), "1,250");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(short_id("3f2a9c1b7e0d55aa"), "3f2a9c1b7e0d");
        assert_eq!(short_id("abc"), "abc");
    }
}
