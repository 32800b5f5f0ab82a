//! Times are stored as integer milliseconds since the Unix epoch (`BIGINT`), on both dialects.
//!
//! Why not `TIMESTAMPTZ`/`DATETIME`: the audit hash covers the stored time, so the value must
//! read back bit-for-bit identical on SQLite and PostgreSQL; an integer does, a driver-mapped
//! timestamp type (with its own precision and time-zone rules) might not.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

pub(crate) fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis())
            .map(|ms| -ms)
            .unwrap_or(i64::MIN),
    }
}

pub(crate) fn from_ms(ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    let t = if ms >= 0 {
        UNIX_EPOCH.checked_add(d)
    } else {
        UNIX_EPOCH.checked_sub(d)
    };
    // Out-of-range values can only come from a corrupted row; clamping keeps reads total.
    t.unwrap_or(UNIX_EPOCH)
}

/// Serde adapter: `SystemTime` as integer milliseconds since the epoch, the JSON form the admin
/// API and CLI exchange.
pub mod serde_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(super::to_ms(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        i64::deserialize(d).map(super::from_ms)
    }
}

/// Serde adapter: `Option<SystemTime>` as milliseconds or `null`.
pub mod serde_ms_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&super::to_ms(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        Option::<i64>::deserialize(d).map(|o| o.map(super::from_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millisecond_round_trip_is_exact() {
        for ms in [0, 1, -1, 1_700_000_000_123, -86_400_000] {
            assert_eq!(to_ms(from_ms(ms)), ms);
        }
    }
}
