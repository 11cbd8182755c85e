//! Wall-clock time as Kafka spells it: milliseconds since the Unix epoch.

/// Now, in Unix milliseconds; 0 on a clock set before 1970.
pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
