//! How list and show commands print: an aligned table (the default) or
//! JSON (`--output json`), one printer for every command.

use serde::Serialize;

/// `--output`: what list and show commands print.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns with a header line.
    #[default]
    Table,
    /// JSON, for scripts.
    Json,
}

/// Columns sized to their widest cell, so they line up whatever the
/// values. Control characters in a cell are escaped: a stored name cannot
/// break the layout or send terminal escapes.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// Between columns.
const GAP: &str = "  ";

impl Table {
    /// A table with these column headers.
    pub fn new<I, S>(headers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self {
            headers: headers.into_iter().map(|h| clean(h.as_ref())).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are empty, extra cells are dropped.
    pub fn row<I, S>(&mut self, cells: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut row: Vec<String> = cells
            .into_iter()
            .take(self.headers.len())
            .map(|c| clean(c.as_ref()))
            .collect();
        row.resize(self.headers.len(), String::new());
        self.rows.push(row);
        self
    }

    /// The table as text, one line per row after the header; the last
    /// column is not padded.
    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let last = line.len().saturating_sub(1);
            let mut text = String::new();
            for (i, (cell, w)) in line.iter().zip(&widths).enumerate() {
                text.push_str(cell);
                if i < last {
                    text.push_str(&" ".repeat(w - width(cell)));
                    text.push_str(GAP);
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints [`Table::render`] to standard output.
    pub fn print(&self) {
        print!("{}", self.render());
    }
}

fn clean(cell: &str) -> String {
    if cell.chars().any(char::is_control) {
        cell.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    } else {
        cell.to_owned()
    }
}

/// Prints `value` as pretty JSON to standard output.
pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A time as operators read it (RFC 3339, UTC, seconds), or `-`.
pub fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or_else(
        || "-".to_owned(),
        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// A Unix time as [`time`] prints it.
pub fn unix_time(secs: i64) -> String {
    time(chrono::DateTime::from_timestamp(secs, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_whatever_the_values() {
        let mut table = Table::new(["A", "LONGER HEADER", "LAST"]);
        table.row(["a-very-long-first-cell", "x", "tail"]);
        table.row(["é", "", "t"]);
        let text = table.render();
        let lines: Vec<&str> = text.lines().collect();
        let col = |line: &str, needle: &str| {
            line.chars().count() - line[line.find(needle).unwrap()..].chars().count()
        };
        assert_eq!(col(lines[0], "LONGER"), col(lines[1], "x"));
        assert_eq!(col(lines[0], "LAST"), col(lines[1], "tail"));
        assert_eq!(col(lines[0], "LAST"), col(lines[2], "t"));
        assert!(!text.lines().any(|l| l.ends_with(' ')));
    }

    #[test]
    fn control_characters_are_escaped() {
        let mut table = Table::new(["NAME"]);
        table.row(["evil\n\u{1b}[31m"]);
        let text = table.render();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(!text.contains('\u{1b}'));
    }
}
