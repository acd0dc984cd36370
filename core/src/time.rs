//! Wall-clock helpers: the journal stores microseconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// RFC 3339 with microseconds, UTC.
pub fn format_us(us: i64) -> String {
    match jiff::Timestamp::from_microsecond(us) {
        Ok(ts) => format!("{ts:.6}"),
        Err(_) => format!("@{us}us"),
    }
}

/// Parses a point in time for `--since`/`--until`: an RFC 3339 timestamp
/// (`2026-11-25T18:00:00Z`), or a span back from now (`90s`, `15m`, `2h`, `7d`, `1h 30m`).
pub fn parse_point(s: &str, now_us: i64) -> Result<i64, String> {
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Ok(ts.as_microsecond());
    }
    let back = s.parse::<jiff::Span>().ok().and_then(|span| {
        let now = jiff::Timestamp::from_microsecond(now_us).ok()?.to_zoned_datetime(jiff::tz::TimeZone::UTC);
        now.checked_sub(span.abs()).ok()
    });
    match back {
        Some(t) => Ok(t.timestamp().as_microsecond()),
        None => Err(format!(
            "`{s}` is neither an RFC 3339 time (2026-11-25T18:00:00Z) nor a span back from now (15m, 2h, 7d)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_timestamps_and_spans() {
        let now = 1_800_000_000_000_000;
        assert_eq!(parse_point("2026-11-25T18:00:00Z", now).unwrap(), 1_795_629_600_000_000);
        assert_eq!(parse_point("15m", now).unwrap(), now - 15 * 60 * 1_000_000);
        assert_eq!(parse_point("2h", now).unwrap(), now - 2 * 3600 * 1_000_000);
        assert_eq!(parse_point("7d", now).unwrap(), now - 7 * 86_400 * 1_000_000);
        assert!(parse_point("yesterday-ish", now).is_err());
        assert_eq!(format_us(1_795_629_600_000_001), "2026-11-25T18:00:00.000001Z");
    }
}
