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
    fn ages_read_like_docker() {
        assert_eq!(ago(0, 5_000), "5 seconds ago");
        assert_eq!(ago(0, 60_000), "1 minute ago");
        assert_eq!(ago(0, 7_200_000), "2 hours ago");
    }
}
