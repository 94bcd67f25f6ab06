//! Durations as the operator types them, in Docker's syntax: Go's `time.ParseDuration`
//! grammar (`300ms`, `1.5s`, `1m30s`, `2h45m`, `1us`), which `docker service create
//! --restart-delay` and friends accept. Every duration flag of the CLI and the daemon
//! reads through [`parse_duration`].
//!
//! Two additions Hoist accepted before it followed Go, kept so no command line that
//! worked stops working: `d` for days (`90d`), and a bare number meaning seconds
//! (`10`, `1.5`). Negative durations are refused (Go accepts `-1s`; no Hoist setting
//! means anything by one). Knows nothing of which flag it is reading.

use std::time::Duration;

/// Why a duration was refused; the message quotes the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {reason}")]
pub struct InvalidDuration {
    pub text: String,
    pub reason: String,
}

const NANOS_PER_MS: u128 = 1_000_000;

/// Nanoseconds per unit, Go's units plus days.
fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => NANOS_PER_MS,
        "s" => 1_000 * NANOS_PER_MS,
        "m" => 60_000 * NANOS_PER_MS,
        "h" => 3_600_000 * NANOS_PER_MS,
        "d" => 86_400_000 * NANOS_PER_MS,
        _ => return None,
    })
}

/// Reads `text` (surrounding whitespace ignored) as a duration.
pub fn parse_duration(text: &str) -> Result<Duration, InvalidDuration> {
    let nanos = parse_nanos(text.trim()).map_err(|reason| InvalidDuration {
        text: text.trim().to_string(),
        reason,
    })?;
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| InvalidDuration {
        text: text.trim().to_string(),
        reason: "too large".into(),
    })?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// [`parse_duration`] in whole milliseconds, rounded to the nearest (`1.5ms` is 2).
pub fn parse_duration_ms(text: &str) -> Result<u64, InvalidDuration> {
    let duration = parse_duration(text)?;
    let ms = (duration.as_nanos() + NANOS_PER_MS / 2) / NANOS_PER_MS;
    u64::try_from(ms).map_err(|_| InvalidDuration {
        text: text.trim().to_string(),
        reason: "too large".into(),
    })
}

fn parse_nanos(text: &str) -> Result<u128, String> {
    const EXPECTED: &str = "expected a number and a unit, like 10s, 1m30s or 500ms";
    let unsigned = match text.strip_prefix('-') {
        Some(_) => return Err("a duration cannot be negative".into()),
        None => text.strip_prefix('+').unwrap_or(text),
    };
    if unsigned.is_empty() {
        return Err(EXPECTED.into());
    }
    // Hoist's older form: a bare number is seconds.
    if unsigned.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return component(unsigned, "s").map_err(|_| EXPECTED.into());
    }
    let mut total: u128 = 0;
    let mut rest = unsigned;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        if number.is_empty() {
            return Err(EXPECTED.into());
        }
        if unit.is_empty() {
            return Err(format!(
                "missing unit after {number:?} (use ns, us, ms, s, m, h or d)"
            ));
        }
        total = total
            .checked_add(component(number, unit)?)
            .ok_or("too large")?;
        rest = next;
    }
    Ok(total)
}

/// One `number unit` pair in nanoseconds, the fraction kept exactly (to the nanosecond).
fn component(number: &str, unit: &str) -> Result<u128, String> {
    let scale = unit_nanos(unit)
        .ok_or_else(|| format!("unknown unit {unit:?} (use ns, us, ms, s, m, h or d)"))?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(format!("{number:?} is not a number"));
    }
    let parse = |digits: &str| -> Result<u128, String> {
        if digits.is_empty() {
            return Ok(0);
        }
        digits.parse::<u128>().map_err(|_| "too large".to_string())
    };
    let mut nanos = parse(whole)?.checked_mul(scale).ok_or("too large")?;
    // Digits past the 19th cannot change a nanosecond count of a unit up to a day.
    let fraction = &fraction[..fraction.len().min(19)];
    if !fraction.is_empty() {
        let denominator = 10u128.pow(fraction.len() as u32);
        nanos = nanos
            .checked_add(parse(fraction)? * scale / denominator)
            .ok_or("too large")?;
    }
    Ok(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_duration_syntax_and_hoists_additions_parse() {
        let ms = |text| parse_duration_ms(text);
        let table: &[(&str, u64)] = &[
            ("0", 0),
            ("0s", 0),
            ("1s", 1_000),
            ("300ms", 300),
            ("1.5s", 1_500),
            (".5s", 500),
            ("1.s", 1_000),
            ("1m30s", 90_000),
            ("2h45m", 9_900_000),
            ("1h2m3s4ms", 3_723_004),
            ("1.5h", 5_400_000),
            ("+2s", 2_000),
            ("1500us", 2),
            ("1499us", 1),
            ("1µs", 0),
            ("2000000ns", 2),
            ("1.5ms", 2),
            (" 10s ", 10_000),
            // Hoist's own, from before it followed Go.
            ("90d", 7_776_000_000),
            ("2160h", 7_776_000_000),
            ("10", 10_000),
            ("1.5", 1_500),
        ];
        for (text, want) in table {
            assert_eq!(ms(text), Ok(*want), "{text:?}");
        }
        assert_eq!(
            parse_duration("1.000000001s"),
            Ok(Duration::new(1, 1)),
            "nanoseconds are exact"
        );
    }

    #[test]
    fn bad_durations_are_refused_with_a_reason() {
        let table: &[(&str, &str)] = &[
            ("", "expected a number"),
            ("-1s", "negative"),
            ("-0", "negative"),
            ("fast", "expected a number"),
            ("10 parsecs", "unknown unit \" parsecs\""),
            ("5parsecs", "unknown unit \"parsecs\""),
            ("1m30", "missing unit"),
            (".s", "not a number"),
            ("1.2.3s", "not a number"),
            ("s", "expected a number"),
            ("1e3s", "unknown unit \"e\""),
            ("99999999999999999999999999999999999999999h", "too large"),
            ("999999999999999999d", "too large"),
        ];
        for (text, want) in table {
            let err = parse_duration(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(err.contains(&format!("{:?}", text.trim())), "{err}");
        }
    }
}
