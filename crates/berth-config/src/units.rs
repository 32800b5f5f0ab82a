//! Parsers for the human-readable durations and sizes the file format accepts.
//!
//! Both return a plain message on error; the caller knows the field and position.

use std::time::Duration;

/// Units a duration may use, longest suffix first so `ms` is not read as `m` followed by `s`.
const DURATION_UNITS: &[(&str, u64)] = &[
    ("ms", 1),
    ("s", 1_000),
    ("m", 60 * 1_000),
    ("h", 60 * 60 * 1_000),
    ("d", 24 * 60 * 60 * 1_000),
];

/// Units a size may use; matched case-insensitively because `16kib` and `16KiB` are never meant
/// to differ in a proxy's limits.
const SIZE_UNITS: &[(&str, u64)] = &[
    ("b", 1),
    ("kb", 1_000),
    ("kib", 1 << 10),
    ("mb", 1_000_000),
    ("mib", 1 << 20),
    ("gb", 1_000_000_000),
    ("gib", 1 << 30),
];

/// Parses `500ms`, `2s`, `1m30s`, `7d`: one or more `<digits><unit>` terms, summed.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("empty duration".to_owned());
    }
    let mut rest = text;
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let (number, after_number) = split_digits(rest);
        if number.is_empty() {
            return Err(format!(
                "expected a number at `{rest}` in duration `{text}`"
            ));
        }
        let unit_len = after_number
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after_number.len());
        let (unit, after_unit) = after_number.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!("`{number}` in duration `{text}` has no unit"));
        }
        let Some(&(_, unit_ms)) = DURATION_UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(format!(
                "unknown duration unit `{unit}` in `{text}` (use ms, s, m, h or d)"
            ));
        };
        let term = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit_ms))
            .and_then(|ms| total_ms.checked_add(ms));
        total_ms = term.ok_or_else(|| format!("duration `{text}` is too large"))?;
        rest = after_unit;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Parses `1024`, `16KiB`, `10 MB`: a whole number with an optional unit (bytes if absent).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = split_digits(text);
    if number.is_empty() {
        return Err(format!("`{text}` is not a size"));
    }
    // One space is allowed because `10 MiB` is how people write sizes in prose.
    let unit = match unit.strip_prefix(' ') {
        Some("") => return Err(format!("size `{text}` ends in a space instead of a unit")),
        Some(unit) => unit,
        None => unit,
    };
    let multiplier = if unit.is_empty() {
        1
    } else {
        let lower = unit.to_ascii_lowercase();
        let Some(&(_, multiplier)) = SIZE_UNITS.iter().find(|(name, _)| *name == lower) else {
            return Err(format!(
                "unknown size unit `{unit}` in `{text}` (use B, KB, KiB, MB, MiB, GB or GiB)"
            ));
        };
        multiplier
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("size `{text}` is too large"))
}

/// Splits off the leading ASCII digits.
fn split_digits(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text.split_at(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_unit_durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn combined_durations_add_up() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(
            parse_duration("1h2m3s4ms"),
            Ok(Duration::from_millis(3_723_004))
        );
    }

    #[test]
    fn bad_durations_are_refused() {
        for bad in [
            "", "30", "s", "1.5s", "10 s", "5sec", "1m30", "-1s", " 1s", "2S",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn duration_overflow_is_an_error() {
        let err = parse_duration("99999999999999999999d").unwrap_err();
        assert!(err.contains("too large"), "{err}");
        assert!(parse_duration("18446744073709551615d").is_err());
    }

    #[test]
    fn sizes_with_and_without_units() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("12B"), Ok(12));
        assert_eq!(parse_size("16KiB"), Ok(16 * 1024));
        assert_eq!(parse_size("16KB"), Ok(16_000));
        assert_eq!(parse_size("10MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("10 MB"), Ok(10_000_000));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("4kib"), Ok(4096));
    }

    #[test]
    fn bad_sizes_are_refused() {
        for bad in ["", "KiB", "1.5MiB", "10 ", "10  MiB", "10TB", "-1", "ten"] {
            assert!(parse_size(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(
            parse_size("99999999999GiB")
                .unwrap_err()
                .contains("too large")
        );
    }
}
