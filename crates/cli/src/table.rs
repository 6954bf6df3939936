//! The CLI's one table renderer: every command that prints rows of columns (deploys, events,
//! alerts, silences, incidents, probes, backups, secrets, tokens) lays them out here, so they
//! all align the same way.
//!
//! Widths count characters, not bytes: a cell holding `é` or `✓` takes one column, so a
//! non-ASCII name does not push the rest of its row out of line. Cells are padded to their
//! column's width and separated by two spaces; the last column is never padded (no trailing
//! blanks), so a free-text column (a message, a reason) goes last.
//!
//! It renders text for people only; `--output json` prints the API's typed response instead and
//! never goes through here.

/// How a column's cells sit in their width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Align {
    #[default]
    Left,
    /// For numbers, so their digits line up.
    Right,
}

/// Rows of cells under an optional header.
#[derive(Debug, Default)]
pub struct Table {
    header: Option<Vec<String>>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

/// Gap between columns.
const GAP: &str = "  ";

impl Table {
    /// A table without a header line.
    pub fn new() -> Self {
        Table::default()
    }

    /// A table whose first line names its columns.
    pub fn with_header<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Table { header: Some(header.into_iter().map(Into::into).collect()), ..Table::default() }
    }

    /// Aligns column `column` (from 0) to `align`; columns not named align left.
    pub fn align(mut self, column: usize, align: Align) -> Self {
        if self.align.len() <= column {
            self.align.resize(column + 1, Align::Left);
        }
        self.align[column] = align;
        self
    }

    /// Adds a row; rows may have fewer cells than others (the missing ones are empty).
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// The table as lines, each ending in a newline; empty when there are no rows (a header
    /// alone says nothing: the caller says "no ..." in its own words).
    pub fn render(&self) -> String {
        if self.rows.is_empty() {
            return String::new();
        }
        let lines: Vec<&Vec<String>> = self.header.iter().chain(&self.rows).collect();
        let columns = lines.iter().map(|cells| cells.len()).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for cells in &lines {
            for (i, cell) in cells.iter().enumerate() {
                widths[i] = widths[i].max(width(cell));
            }
        }
        let mut out = String::new();
        for cells in lines {
            let mut line = String::new();
            for (i, &column_width) in widths.iter().enumerate() {
                let cell = cells.get(i).map(String::as_str).unwrap_or("");
                let last = i + 1 == columns;
                if i > 0 {
                    line.push_str(GAP);
                }
                let pad = column_width - width(cell);
                match self.align.get(i).copied().unwrap_or_default() {
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(cell);
                    }
                    Align::Left => {
                        line.push_str(cell);
                        if !last {
                            line.extend(std::iter::repeat_n(' ', pad));
                        }
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table on stdout.
    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// A cell's width on a terminal: its characters (not its bytes).
fn width(cell: &str) -> usize {
    cell.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_characters_not_bytes() {
        let mut table = Table::with_header(["NAME", "STATE", "NOTE"]);
        table.row(["café", "ok", "first"]);
        table.row(["api", "dégradé", "second"]);
        table.row(["✓✓✓✓✓✓", "ok", "third"]);
        let rendered = table.render();
        assert_eq!(
            rendered,
            "NAME    STATE    NOTE\n\
             café    ok       first\n\
             api     dégradé  second\n\
             ✓✓✓✓✓✓  ok       third\n"
        );
        // The third column starts at the same character column on every line, although the
        // lines' byte lengths before it differ.
        let starts: Vec<usize> = rendered
            .lines()
            .zip(["NOTE", "first", "second", "third"])
            .map(|(line, cell)| line[..line.find(cell).unwrap_or(0)].chars().count())
            .collect();
        assert_eq!(starts, [17, 17, 17, 17], "{rendered}");
    }

    #[test]
    fn right_aligned_numbers_line_up_under_a_non_ascii_header() {
        let mut table = Table::with_header(["SERVICE", "ÉCHECS"]).align(1, Align::Right);
        table.row(["api", "7"]);
        table.row(["web", "1234"]);
        assert_eq!(table.render(), "SERVICE  ÉCHECS\napi           7\nweb        1234\n");
    }

    #[test]
    fn the_last_column_is_not_padded_and_short_rows_are_filled() {
        let mut table = Table::new();
        table.row(["a", "long message"]);
        table.row(["bbb"]);
        table.row(["cc", "x"]);
        assert_eq!(table.render(), "a    long message\nbbb\ncc   x\n");
        assert!(table.render().lines().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn an_empty_table_renders_nothing_even_with_a_header() {
        let table = Table::with_header(["A", "B"]);
        assert_eq!(table.render(), "");
    }

    #[test]
    fn a_multi_byte_symbol_counts_one_column() {
        let mut table = Table::new();
        table.row(["→", "x"]);
        table.row(["ab", "y"]);
        assert_eq!(table.render(), "→   x\nab  y\n");
    }
}
