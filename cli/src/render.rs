//! Terminal rendering: whether to draw bars and colours (a terminal without `NO_COLOR`), bars,
//! aligned tables, sizes, durations and ages.

use std::io::IsTerminal;

/// How output is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    /// Bars, colours and in-place redraws (stdout is a terminal, `NO_COLOR` is unset or empty,
    /// `TERM` is not `dumb`). Otherwise plain lines without escape codes.
    pub fancy: bool,
}

impl Style {
    /// The style for this process's stdout and environment.
    pub fn detect() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        Self {
            fancy: std::io::stdout().is_terminal() && !no_color && !dumb,
        }
    }

    /// Plain output: no escape codes.
    pub fn plain() -> Self {
        Self { fancy: false }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.fancy {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    /// Green text.
    pub fn green(&self, s: &str) -> String {
        self.paint("32", s)
    }

    /// Red text.
    pub fn red(&self, s: &str) -> String {
        self.paint("31", s)
    }

    /// Yellow text.
    pub fn yellow(&self, s: &str) -> String {
        self.paint("33", s)
    }

    /// Bold text.
    pub fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }

    /// Dim text.
    pub fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }

    /// A phase name coloured by its meaning.
    pub fn phase(&self, phase: &str) -> String {
        match phase {
            "Succeeded" => self.green(phase),
            "Failed" => self.red(phase),
            "Running" => self.yellow(phase),
            _ => phase.to_string(),
        }
    }
}

/// A bar of `width` cells, `fraction` (0-1) of them filled.
pub fn bar(fraction: f64, width: usize) -> String {
    let filled = ((fraction.clamp(0.0, 1.0) * width as f64).round() as usize).min(width);
    format!("{}{}", "█".repeat(filled), "░".repeat(width - filled))
}

/// A column of a [`table`].
#[derive(Clone, Copy, Debug)]
pub struct Col<'a> {
    /// Header.
    pub name: &'a str,
    /// Right-aligned (numbers).
    pub right: bool,
}

/// A left-aligned column.
pub fn left(name: &str) -> Col<'_> {
    Col { name, right: false }
}

/// A right-aligned column.
pub fn right(name: &str) -> Col<'_> {
    Col { name, right: true }
}

/// Visible width of a cell: escape sequences take no columns.
fn width(s: &str) -> usize {
    let mut n = 0;
    let mut in_escape = false;
    for c in s.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => n += 1,
        }
    }
    n
}

/// An aligned table: a header line and one line per row, columns two spaces apart, no
/// trailing spaces.
pub fn table(cols: &[Col<'_>], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = cols.iter().map(|c| c.name.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols.len()) {
            widths[i] = widths[i].max(width(cell));
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(width(cell));
            if i > 0 {
                out.push_str("  ");
            }
            if cols[i].right {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            } else {
                out.push_str(cell);
                if i + 1 < cells.len() {
                    out.push_str(&" ".repeat(pad));
                }
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(cols.iter().map(|c| c.name).collect());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// A byte count for people: `512 B`, `12.3 KiB`, `4.0 MiB`.
pub fn human_bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    if n < 1024.0 {
        format!("{n} B")
    } else if n < 1024.0 * 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{:.1} MiB", n / (1024.0 * 1024.0))
    }
}

/// Seconds with three decimals: `0.184`.
pub fn seconds(secs: f64) -> String {
    format!("{secs:.3}")
}

/// An age like kubectl's: `42s`, `5m`, `3h`, `2d`.
pub fn age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bars_fill_in_proportion() {
        assert_eq!(bar(0.0, 4), "░░░░");
        assert_eq!(bar(0.5, 4), "██░░");
        assert_eq!(bar(1.0, 4), "████");
        assert_eq!(bar(7.0, 4), "████");
    }

    #[test]
    fn tables_align_and_ignore_escape_codes() {
        let style = Style { fancy: true };
        let t = table(
            &[left("NAME"), right("N")],
            &[
                vec![style.green("a"), "1".into()],
                vec!["long".into(), "100".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "NAME    N");
        assert_eq!(lines[2], "long  100");
        assert!(lines[1].ends_with("     1"), "{:?}", lines[1]);
    }

    #[test]
    fn plain_style_has_no_escape_codes() {
        let p = Style::plain();
        assert_eq!(p.red("x"), "x");
        assert_eq!(p.phase("Failed"), "Failed");
    }

    #[test]
    fn sizes_and_ages_read_like_kubectl() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(12_595), "12.3 KiB");
        assert_eq!(age(42), "42s");
        assert_eq!(age(300), "5m");
        assert_eq!(age(3 * 3600), "3h");
        assert_eq!(age(3 * 86400), "3d");
    }
}
