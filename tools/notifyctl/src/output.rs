//! Text output: tables whose columns are as wide as their widest cell, so long targets, codes
//! and reasons never run into the next column.

/// How a column's cells line up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    /// Numbers.
    Right,
}

pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, Align)]) -> Self {
        Self { columns: columns.to_vec(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.columns.len(), "a cell per column");
        self.rows.push(cells);
    }

    /// The table as lines, two spaces between columns, the last column's cells unpadded.
    pub fn render(&self) -> String {
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|column| {
                let header = self.columns[column].0.chars().count();
                self.rows.iter().map(|row| row[column].chars().count()).chain([header]).max().unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<&str>| {
            let last = cells.len() - 1;
            let padded: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(column, cell)| match (self.columns[column].1, column == last) {
                    (Align::Right, _) => format!("{cell:>width$}", width = widths[column]),
                    (Align::Left, true) => cell.to_string(),
                    (Align::Left, false) => format!("{cell:<width$}", width = widths[column]),
                })
                .collect();
            padded.join("  ")
        };
        let mut lines = vec![line(self.columns.iter().map(|(header, _)| *header).collect())];
        lines.extend(self.rows.iter().map(|row| line(row.iter().map(String::as_str).collect())));
        lines.join("\n")
    }

    pub fn print(&self) {
        println!("{}", self.render());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let mut table =
            Table::new(&[("CHANNEL", Align::Left), ("TARGET", Align::Left), ("N", Align::Right), ("S", Align::Left)]);
        table.row(vec!["push".into(), "0123456789abcdef0123456789abcdef".into(), "12".into(), "sent".into()]);
        table.row(vec!["sms".into(), "+12015550123".into(), "3".into(), "queued".into()]);
        let rendered = table.render();
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(lines[0], "CHANNEL  TARGET                             N  S");
        assert_eq!(lines[1], "push     0123456789abcdef0123456789abcdef  12  sent");
        assert_eq!(lines[2], "sms      +12015550123                       3  queued");
    }
}
