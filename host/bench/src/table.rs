//! One table of results, printed aligned on the terminal and as a Markdown
//! pipe table in `BENCHMARKS.md`, from the same rows so the two never differ.

/// A titled table of text cells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub title: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: &str, headers: &[&str]) -> Table {
        Table {
            title: title.to_string(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Add a row; short rows are padded with empty cells.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len().max(cells.len()), String::new());
        self.rows.push(cells);
    }

    fn widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if i >= widths.len() {
                    widths.push(0);
                }
                widths[i] = widths[i].max(width(cell));
            }
        }
        widths
    }

    /// Aligned columns for a terminal: the title, the headers, a rule, the rows.
    pub fn to_text(&self) -> String {
        let widths = self.widths();
        let line = |cells: &[String]| {
            let padded: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let cell = cells.get(i).map(String::as_str).unwrap_or("");
                    format!("{cell}{}", " ".repeat(w - width(cell)))
                })
                .collect();
            padded.join("  ").trim_end().to_string()
        };
        let mut out = format!("{}\n", self.title);
        out.push_str(&line(&self.headers));
        out.push('\n');
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&rule.join("  "));
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        out
    }

    /// A Markdown pipe table (no title; the report puts it in a heading).
    pub fn to_markdown(&self) -> String {
        let escape = |c: &str| c.replace('|', "\\|").replace('\n', " ");
        let line = |cells: &[String]| {
            let cells: Vec<String> = (0..self.headers.len())
                .map(|i| escape(cells.get(i).map(String::as_str).unwrap_or("")))
                .collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let mut out = line(&self.headers);
        out.push_str(&format!(
            "|{}\n",
            " --- |".repeat(self.headers.len().max(1))
        ));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// Display width: characters, not bytes (`µ` and `×` are one column).
fn width(s: &str) -> usize {
    s.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new("Plugins", &["plugin", "median"]);
        t.row(vec!["canary".into(), "3.42 µs".into()]);
        t.row(vec!["a|b".into()]);
        t
    }

    #[test]
    fn text_columns_align_on_characters_not_bytes() {
        assert_eq!(
            sample().to_text(),
            "Plugins\n\
             plugin  median\n\
             ------  -------\n\
             canary  3.42 µs\n\
             a|b\n"
        );
    }

    #[test]
    fn markdown_escapes_pipes_and_pads_short_rows() {
        assert_eq!(
            sample().to_markdown(),
            "| plugin | median |\n\
             | --- | --- |\n\
             | canary | 3.42 µs |\n\
             | a\\|b |  |\n"
        );
    }
}
