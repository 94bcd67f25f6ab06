//! Tables in Docker's layout (columns padded to the widest cell plus three spaces) and
//! JSON for scripts.

use serde::Serialize;

/// Stdout was closed by its reader (`hoist service ls | head -1`): the command stops
/// there and the binary exits 0 without a word, as other command-line tools do.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed")]
pub struct StdoutClosed;

/// Writes to stdout; a closed pipe becomes [`StdoutClosed`], any other failure an
/// error that says stdout could not be written.
pub fn write_stdout(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_fmt(args) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(err) => Err(anyhow::Error::new(err).context("writing to stdout")),
    }
}

/// Prints rows under a header, aligned.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    out!("{}", render_table(header, rows));
    Ok(())
}

pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.chars().count()).collect();
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            if index < widths.len() {
                widths[index] = widths[index].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (index, cell) in cells.iter().enumerate() {
            text.push_str(cell);
            if index + 1 < cells.len() {
                let pad = widths[index] - cell.chars().count() + 3;
                text.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    outln!("{text}");
    Ok(())
}

/// Checks `--format`: only `json` (or nothing, for a table) is known.
pub fn wants_json(format: &Option<String>) -> anyhow::Result<bool> {
    match format.as_deref() {
        None | Some("table") => Ok(false),
        Some("json") => Ok(true),
        Some(other) => anyhow::bail!("unknown --format {other:?}: use json or table"),
    }
}

/// A moment as people read it: `2026-12-02 08:07:59 UTC`.
pub fn timestamp(ms: u64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|moment| moment.format(&format).ok())
        .unwrap_or_else(|| format!("{ms} ms after 1970-01-01 UTC"))
}

/// [`timestamp`] with how long ago it was: `2026-12-02 08:07:59 UTC (5 minutes ago)`.
pub fn timestamp_ago(ms: u64, now_ms: u64) -> String {
    format!("{} ({})", timestamp(ms), ago(ms, now_ms).to_lowercase())
}

/// A duration in the units `--heartbeat-period` and the other duration flags take,
/// largest first: `500ms`, `5s`, `1m30s`, `2h`, `90d`.
pub fn duration(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut rest = ms;
    let mut text = String::new();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if rest >= size {
            text.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    text
}

/// "5 seconds ago", as Docker says it.
pub fn ago(then_ms: u64, now_ms: u64) -> String {
    let secs = now_ms.saturating_sub(then_ms) / 1000;
    let (n, unit) = match secs {
        0 => return "Less than a second ago".into(),
        1..=59 => (secs, "second"),
        60..=3599 => (secs / 60, "minute"),
        3600..=86_399 => (secs / 3600, "hour"),
        _ => (secs / 86_400, "day"),
    };
    if n == 1 {
        format!("1 {unit} ago")
    } else {
        format!("{n} {unit}s ago")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let text = render_table(
            &["ID", "HOSTNAME"],
            &[
                vec!["a".into(), "node-1".into()],
                vec!["bbbb".into(), "n2".into()],
            ],
        );
        assert_eq!(text, "ID     HOSTNAME\na      node-1\nbbbb   n2\n");
    }

    #[test]
    fn times_and_durations_read_as_people_write_them() {
        assert_eq!(timestamp(1_796_187_183_267), "2026-12-02 04:53:03 UTC");
        assert_eq!(
            timestamp_ago(1_796_187_183_267, 1_796_187_183_267 + 300_000),
            "2026-12-02 04:53:03 UTC (5 minutes ago)"
        );
        assert_eq!(duration(500), "500ms");
        assert_eq!(duration(1_000), "1s");
        assert_eq!(duration(90_000), "1m30s");
        assert_eq!(duration(2160 * 3_600_000), "90d");
        assert_eq!(duration(1_500), "1s500ms");
        assert_eq!(duration(0), "0s");
        assert!(!timestamp(u64::MAX).is_empty());
    }

    #[test]
    fn ages_read_like_docker() {
        assert_eq!(ago(0, 5_000), "5 seconds ago");
        assert_eq!(ago(0, 60_000), "1 minute ago");
        assert_eq!(ago(0, 7_200_000), "2 hours ago");
    }
}
