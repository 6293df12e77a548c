//! The results of one run: a section per item (what was measured and how,
//! its tables, its notes) and the targets with their verdicts;
//! printed as text and written as `BENCHMARKS.md`.

use std::fmt::Write;

use crate::stats::Verdict;
use crate::table::Table;

/// One of the targets, measured.
#[derive(Debug, Clone)]
pub struct TargetRow {
    /// The target as the issue states it.
    pub target: String,
    /// What was measured against it.
    pub measured: String,
    pub verdict: Verdict,
    /// Why it was missed (empty when met).
    pub why: String,
}

/// One item of the issue.
#[derive(Debug, Clone, Default)]
pub struct Section {
    pub number: u8,
    pub title: String,
    /// How it was measured, in a paragraph.
    pub method: String,
    /// What else the machine was doing meanwhile.
    pub context: String,
    pub tables: Vec<Table>,
    /// Observations, and the reasons behind missed targets.
    pub notes: Vec<String>,
    pub targets: Vec<TargetRow>,
}

impl Section {
    pub fn new(number: u8, title: &str) -> Section {
        Section {
            number,
            title: title.to_string(),
            ..Section::default()
        }
    }

    /// An item that could not run at all.
    pub fn failed(number: u8, title: &str, error: &str) -> Section {
        let mut s = Section::new(number, title);
        s.notes.push(format!("Not measured: {error}"));
        s
    }

    /// The section for a terminal.
    pub fn to_text(&self) -> String {
        let mut out = format!("\n== {}. {} ==\n", self.number, self.title);
        for t in &self.tables {
            out.push('\n');
            out.push_str(&t.to_text());
        }
        for t in &self.targets {
            let _ = writeln!(out, "\ntarget: {} -> {}", t.target, t.verdict.text);
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        if !self.context.is_empty() {
            let _ = writeln!(out, "context: {}", self.context);
        }
        out
    }
}

/// The header facts of a run.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub machine: String,
    pub command: String,
    pub date: String,
    pub duration: String,
    pub build: String,
    pub extra: Vec<String>,
}

/// `BENCHMARKS.md`.
pub fn markdown(info: &RunInfo, sections: &[Section]) -> String {
    let mut out = String::new();
    out.push_str("# Benchmarks\n\n");
    out.push_str(
        "Written by `rollcage-bench` (`host/bench`); edit the harness, not this file, and run it again.\n\n",
    );
    let _ = writeln!(out, "- Machine: {}", info.machine);
    let _ = writeln!(out, "- Command: `{}`", info.command);
    let _ = writeln!(out, "- Date: {}", info.date);
    let _ = writeln!(out, "- Run time: {}", info.duration);
    let _ = writeln!(out, "- Build: {}", info.build);
    for e in &info.extra {
        let _ = writeln!(out, "- {e}");
    }
    out.push('\n');

    out.push_str("## Targets\n\n");
    let mut targets = Table::new("", &["item", "target", "measured", "verdict"]);
    for s in sections {
        for t in &s.targets {
            targets.row(vec![
                format!("{}. {}", s.number, s.title),
                t.target.clone(),
                t.measured.clone(),
                // Missed targets stand out.
                if t.verdict.met {
                    t.verdict.text.clone()
                } else {
                    format!("**{}**", t.verdict.text)
                },
            ]);
        }
    }
    out.push_str(&targets.to_markdown());
    let missed: Vec<(&Section, &TargetRow)> = sections
        .iter()
        .flat_map(|s| s.targets.iter().map(move |t| (s, t)))
        .filter(|(_, t)| !t.verdict.met)
        .collect();
    if !missed.is_empty() {
        out.push_str("\nWhy the missed targets were missed:\n\n");
        for (s, t) in missed {
            let _ = writeln!(
                out,
                "- **{}. {}** ({}): {}",
                s.number, s.title, t.target, t.why
            );
        }
    }

    for s in sections {
        out.push_str(&section_markdown(s));
    }
    out
}

/// One item's section: its heading, method, context, tables and notes.
fn section_markdown(s: &Section) -> String {
    let mut out = String::new();
    let _ = write!(out, "\n## {}. {}\n\n", s.number, s.title);
    if !s.method.is_empty() {
        let _ = writeln!(out, "{}\n", s.method);
    }
    if !s.context.is_empty() {
        let _ = writeln!(out, "*{}*\n", s.context);
    }
    for t in &s.tables {
        if !t.title.is_empty() {
            let _ = writeln!(out, "**{}**\n", t.title);
        }
        out.push_str(&t.to_markdown());
        out.push('\n');
    }
    for n in &s.notes {
        let _ = writeln!(out, "- {n}");
    }
    out
}

/// Where the first build's section (item 8) begins and ends in
/// `BENCHMARKS.md`: it is measured apart (`--first-build`), and the other
/// items' runs keep it as it is.
const KEPT_BEGIN: &str =
    "<!-- item 8, kept across runs: `rollcage-bench --first-build` rewrites it -->";
const KEPT_END: &str = "<!-- end of item 8 -->";

/// The kept block of `text` (markers included), if it has one.
pub fn kept_block(text: &str) -> Option<&str> {
    let start = text.find(KEPT_BEGIN)?;
    let end = text[start..].find(KEPT_END)? + start + KEPT_END.len();
    Some(&text[start..end])
}

/// `report` with the kept block of the previous report appended.
pub fn with_kept(report: String, previous: Option<&str>) -> String {
    match previous.and_then(kept_block) {
        Some(block) => format!("{}\n\n{block}\n", report.trim_end()),
        None => report,
    }
}

/// `previous` (the current `BENCHMARKS.md`, if any) with its kept block
/// replaced by item 8's `section`, or the block appended.
pub fn replace_kept(previous: Option<&str>, section: &Section, date: &str) -> String {
    // Apart from the targets table at the top: its target is stated here.
    let mut targets = String::new();
    for t in &section.targets {
        let _ = write!(targets, "\nTarget, {}: **{}**.", t.target, t.verdict.text);
        if !t.why.is_empty() {
            let _ = write!(targets, " {}", t.why);
        }
        targets.push('\n');
    }
    let block = format!(
        "{KEPT_BEGIN}\n{}\n{targets}\nMeasured {date}.\n{KEPT_END}",
        section_markdown(section).trim_end()
    );
    match previous {
        Some(text) => match kept_block(text) {
            Some(old) => text.replacen(old, &block, 1),
            None => format!("{}\n\n{block}\n", text.trim_end()),
        },
        None => format!("# Benchmarks\n\n{block}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_build_section_survives_the_other_runs() {
        let mut s = Section::new(8, "First build");
        s.method = "cloned".into();
        let first = replace_kept(Some("# Benchmarks\n\n## 1. Plugins\n"), &s, "today");
        assert!(first.starts_with("# Benchmarks\n\n## 1. Plugins\n\n<!-- item 8"));
        assert!(first.contains("## 8. First build\n\ncloned\n"));
        // A full run of the other items writes a new report and keeps it.
        let again = with_kept("# Benchmarks\n\n## 1. New\n".into(), Some(&first));
        assert_eq!(kept_block(&again), kept_block(&first));
        assert!(again.contains("## 1. New"));
        // Measuring it again replaces it in place.
        s.method = "cloned again".into();
        let third = replace_kept(Some(&again), &s, "tomorrow");
        assert_eq!(third.matches(KEPT_BEGIN).count(), 1);
        assert!(third.contains("cloned again") && !third.contains("cloned\n"));
        assert!(third.contains("## 1. New"));
    }
}
