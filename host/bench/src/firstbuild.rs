//! Item 8: a newcomer's first demo. A fresh clone of the repository's
//! committed `HEAD` runs the README's first command, `cargo run --release
//! -- demo`, with an empty target folder, and the clock stops at the demo's
//! first line. Cargo's own `--timings` report of that build says where the
//! time went, and the plugin build (one build-script run in cargo's eyes)
//! is broken down by the record `rollcage-wasm-build` leaves.
//!
//! Crate downloads are not counted: `cargo fetch` fills the cache first,
//! since a network's speed is not the project's. It takes as long as the
//! build (about ten minutes on two cores) and wants a quiet machine, so it
//! runs only when asked for (`--first-build`), and its section is kept in
//! `BENCHMARKS.md` across the other items' runs.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::report::{Section, TargetRow};
use crate::stats::verdict_at_most;
use crate::table::Table;

const TITLE: &str = "First build: a fresh clone to the demo's first line";
/// The target: ten minutes on the 2-core machine.
const TARGET_SECS: f64 = 600.0;

/// One unit of cargo's `--timings` report.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    pub name: String,
    /// `todo` (compile), `run-custom-build`, ...
    pub mode: String,
    pub target: String,
    pub start: f64,
    pub duration: f64,
}

/// The units of a `cargo-timing.html` (its `UNIT_DATA` array).
pub fn parse_units(html: &str) -> Result<Vec<Unit>, String> {
    let start = html
        .find("const UNIT_DATA = ")
        .ok_or("no UNIT_DATA in the timings report")?
        + "const UNIT_DATA = ".len();
    let rest = &html[start..];
    let end = rest.find(";\n").ok_or("UNIT_DATA does not end")?;
    let data: Vec<Value> =
        serde_json::from_str(&rest[..end]).map_err(|e| format!("UNIT_DATA: {e}"))?;
    Ok(data
        .iter()
        .map(|u| Unit {
            name: u["name"].as_str().unwrap_or_default().to_string(),
            mode: u["mode"].as_str().unwrap_or_default().to_string(),
            target: u["target"].as_str().unwrap_or_default().to_string(),
            start: u["start"].as_f64().unwrap_or_default(),
            duration: u["duration"].as_f64().unwrap_or_default(),
        })
        .collect())
}

/// The group a unit's time is reported under.
pub fn group_of(unit: &Unit) -> &'static str {
    let n = unit.name.as_str();
    if n == "rollcage-builtins" && unit.mode == "run-custom-build" {
        "the builtin plugins (wasm, built by rollcage-builtins' build script)"
    } else if n.starts_with("rollcage") {
        "Rollcage's host crates"
    } else if n.starts_with("wasmtime")
        || n.starts_with("cranelift")
        || n.starts_with("wasm")
        || n.starts_with("wit-")
        || matches!(n, "regalloc2" | "gimli" | "object" | "pulley-interpreter")
    {
        "wasmtime, cranelift and wasm tooling"
    } else {
        "other dependencies"
    }
}

/// The plugin build's record: a file per package holding its seconds,
/// sorted by package (the order they are built in).
pub fn plugin_times(dir: &Path) -> Vec<(String, f64)> {
    let mut times: Vec<(String, f64)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let secs = std::fs::read_to_string(e.path())
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), secs))
        })
        .collect();
    times.sort_by(|a, b| a.0.cmp(&b.0));
    times
}

/// A duration as minutes and seconds: `9 min 41 s`, `38.2 s`.
pub fn fmt_min(secs: f64) -> String {
    if secs >= 60.0 {
        let s = secs.round() as u64;
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{secs:.1} s")
    }
}

/// What one fresh build took.
struct Measured {
    /// The commit built.
    commit: String,
    /// From `cargo run` to the demo's first line.
    to_first_line: f64,
    /// The demo's first line.
    first_line: String,
    units: Vec<Unit>,
    plugins: Vec<(String, f64)>,
    /// CPU time of the build and the demo's start (children of this run).
    cpu: f64,
}

fn cpu_of_children() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn run_ok(cmd: &mut Command, what: &str) -> Result<(), String> {
    let status = cmd.status().map_err(|e| format!("{what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what}: {status}"))
    }
}

fn measure(repo: &Path, rev: Option<&str>, work: &Path) -> Result<Measured, String> {
    let clone = work.join("fresh-clone");
    run_ok(
        Command::new("git")
            .args(["clone", "--quiet", "--no-hardlinks"])
            .arg(repo)
            .arg(&clone),
        "git clone",
    )?;
    if let Some(rev) = rev {
        run_ok(
            Command::new("git")
                .args(["checkout", "--quiet", rev])
                .current_dir(&clone),
            "git checkout",
        )?;
    }
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(&clone)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let fresh = |cmd: &mut Command| {
        // The settings of the cargo that runs this harness are not a
        // newcomer's.
        for var in [
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
        ] {
            cmd.env_remove(var);
        }
        cmd.current_dir(&clone);
    };
    let mut fetch = Command::new(&cargo);
    fetch.args(["fetch", "--locked"]);
    fresh(&mut fetch);
    run_ok(&mut fetch, "cargo fetch")?;

    let cpu_before = cpu_of_children();
    let started = Instant::now();
    let mut cmd = Command::new(&cargo);
    cmd.args(["run", "--release", "--locked", "--timings", "--", "demo"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0);
    fresh(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| format!("cargo run: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let mut first_line = String::new();
    let read = BufReader::new(stdout).read_line(&mut first_line);
    let to_first_line = started.elapsed().as_secs_f64();
    // The demo has shown it runs: stop it and all it started.
    // SAFETY: a signal to the process group this run made.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.wait();
    let cpu = cpu_of_children() - cpu_before;
    match read {
        Ok(n) if n > 0 => {}
        _ => return Err("`cargo run --release -- demo` printed nothing: the build failed".into()),
    }
    let html = std::fs::read_to_string(clone.join("target/cargo-timings/cargo-timing.html"))
        .map_err(|e| format!("cargo's timings report: {e}"))?;
    let plugins = plugin_times(
        &clone
            .join("target/wasm-plugins")
            .join(rollcage_wasm_build::BUILD_TIMES),
    );
    Ok(Measured {
        commit,
        to_first_line,
        first_line: first_line.trim().to_string(),
        units: parse_units(&html)?,
        plugins,
        cpu,
    })
}

/// The title of the summary table, whose rows are measurements.
const SUMMARY: &str = "Fresh clone to the demo's first line";

/// Put the newest measurement of the previous report's item 8 (`block`)
/// under this one's in the summary table, marked as the one before: each
/// run shows what changed since the last.
pub fn keep_previous(section: &mut Section, block: &str) {
    let Some(table) = section.tables.iter_mut().find(|t| t.title == SUMMARY) else {
        return;
    };
    let Some(at) = block.find(&format!("**{SUMMARY}**")) else {
        return;
    };
    // The first data row: after the header and the `| --- |` rule.
    let Some(row) = block[at..].lines().filter(|l| l.starts_with('|')).nth(2) else {
        return;
    };
    let mut cells: Vec<String> = row
        .trim()
        .trim_matches('|')
        .split(" | ")
        .map(|c| c.trim().to_string())
        .collect();
    // A report from before the commit column says only "before".
    if cells.len() + 1 == table.headers.len() && table.headers[0] == "commit" {
        cells.insert(0, "before".into());
    } else if cells.len() == table.headers.len() && !cells[0].starts_with("before") {
        cells[0] = format!("before: {}", cells[0]);
    } else {
        return;
    }
    table.rows.push(cells);
}

/// Measure and describe item 8.
pub fn run(work: &Path, rev: Option<&str>) -> Section {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut s = Section::new(8, TITLE);
    s.method = "A `git clone` of the repository's committed `HEAD` (or the commit `--rev` names) into a temporary folder, \
        `cargo fetch --locked` (not timed: downloads depend on the network), then the README's \
        first command, `cargo run --release --locked -- demo` with `--timings`, timed from its \
        start to the demo's first line on standard output, with an empty target folder. The \
        breakdown is cargo's `--timings` report of that build: each unit's own time, summed by \
        group (units overlap on the cores, so the sums exceed the wall time). The plugins are \
        one build-script run to cargo; `rollcage-wasm-build` records each plugin's share. CPU \
        is the user and system time of everything the build and the demo's start ran."
        .into();
    let m = match measure(&repo, rev, work) {
        Ok(m) => m,
        Err(e) => return Section::failed(8, TITLE, &e),
    };
    let mut summary = Table::new(
        SUMMARY,
        &[
            "commit",
            "wall time",
            "CPU time",
            "CPU ÷ wall",
            "first line",
        ],
    );
    summary.row(vec![
        m.commit.clone(),
        fmt_min(m.to_first_line),
        fmt_min(m.cpu),
        format!("{:.2}", m.cpu / m.to_first_line),
        format!("`{}`", m.first_line.replace('`', "'")),
    ]);
    s.tables.push(summary);

    let mut groups: Vec<(&str, f64, usize)> = Vec::new();
    for u in &m.units {
        let g = group_of(u);
        match groups.iter_mut().find(|(name, _, _)| *name == g) {
            Some(e) => {
                e.1 += u.duration;
                e.2 += 1;
            }
            None => groups.push((g, u.duration, 1)),
        }
    }
    groups.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut by_group = Table::new(
        "Where the build's time goes",
        &["group", "units", "time (sum of units)"],
    );
    for (g, secs, n) in &groups {
        by_group.row(vec![g.to_string(), n.to_string(), fmt_min(*secs)]);
    }
    s.tables.push(by_group);

    let mut slowest: Vec<&Unit> = m.units.iter().collect();
    slowest.sort_by(|a, b| b.duration.total_cmp(&a.duration));
    let mut top = Table::new("The slowest units", &["unit", "kind", "starts at", "time"]);
    for u in slowest.iter().take(12) {
        let kind = if u.mode == "run-custom-build" {
            "build script run".to_string()
        } else {
            u.target
                .trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .to_string()
        };
        top.row(vec![
            u.name.clone(),
            if kind.is_empty() { "lib".into() } else { kind },
            fmt_min(u.start),
            fmt_min(u.duration),
        ]);
    }
    s.tables.push(top);

    if !m.plugins.is_empty() {
        let mut plugins = Table::new(
            "The builtin plugins' build, in order (one cargo invocation each)",
            &["plugin crate", "time"],
        );
        for (name, secs) in &m.plugins {
            plugins.row(vec![name.clone(), fmt_min(*secs)]);
        }
        s.tables.push(plugins);
    }
    let verdict = verdict_at_most(m.to_first_line, TARGET_SECS, fmt_min);
    s.targets.push(TargetRow {
        target: "fresh clone to the demo's first line ≤ 10 min (2 cores)".into(),
        measured: fmt_min(m.to_first_line),
        why: if verdict.met {
            String::new()
        } else {
            "the build is bound by CPU on two cores: see the breakdown".into()
        },
        verdict,
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timings_report_is_read_and_grouped() {
        let html = "<script>\nconst UNIT_DATA = [\
            {\"i\":0,\"name\":\"wasmtime\",\"version\":\"48.0.8\",\"mode\":\"todo\",\"target\":\"\",\"start\":1.5,\"duration\":80.25,\"rmeta_time\":30.0,\"unlocked_units\":[],\"unlocked_rmeta_units\":[]},\
            {\"i\":1,\"name\":\"rollcage-builtins\",\"version\":\"0.1.0\",\"mode\":\"run-custom-build\",\"target\":\"\",\"start\":2.0,\"duration\":300.0,\"rmeta_time\":null,\"unlocked_units\":[],\"unlocked_rmeta_units\":[]},\
            {\"i\":2,\"name\":\"rollcage\",\"version\":\"0.1.0\",\"mode\":\"todo\",\"target\":\" bin \\\"rollcage\\\"\",\"start\":400.0,\"duration\":60.0,\"rmeta_time\":null,\"unlocked_units\":[],\"unlocked_rmeta_units\":[]},\
            {\"i\":3,\"name\":\"serde\",\"version\":\"1\",\"mode\":\"todo\",\"target\":\"\",\"start\":0.0,\"duration\":5.0,\"rmeta_time\":null,\"unlocked_units\":[],\"unlocked_rmeta_units\":[]}\
            ];\nconst CONCURRENCY_DATA = [];\n</script>";
        let units = parse_units(html).unwrap();
        assert_eq!(units.len(), 4);
        assert_eq!(units[0].duration, 80.25);
        let groups: Vec<&str> = units.iter().map(group_of).collect();
        assert_eq!(
            groups,
            [
                "wasmtime, cranelift and wasm tooling",
                "the builtin plugins (wasm, built by rollcage-builtins' build script)",
                "Rollcage's host crates",
                "other dependencies"
            ]
        );
        assert!(parse_units("<html></html>").is_err());
    }

    #[test]
    fn the_previous_measurement_stays_as_before() {
        let mut s = Section::new(8, TITLE);
        let mut t = Table::new(SUMMARY, &["commit", "wall time"]);
        t.row(vec!["bbb".into(), "9 min 2 s".into()]);
        s.tables.push(t);
        let old = format!(
            "## 8. x\n\n**{SUMMARY}**\n\n| commit | wall time |\n| --- | --- |\n| aaa | 11 min 41 s |\n| before: zzz | 13 min 0 s |\n"
        );
        keep_previous(&mut s, &old);
        assert_eq!(
            s.tables[0].rows,
            [
                vec!["bbb".to_string(), "9 min 2 s".into()],
                vec!["before: aaa".into(), "11 min 41 s".into()]
            ]
        );
        // A report without the table, or of another shape, adds nothing.
        keep_previous(&mut s, "## 8. x\n");
        assert_eq!(s.tables[0].rows.len(), 2);
        // One from before the commit column is just "before".
        s.tables[0].rows.truncate(1);
        keep_previous(
            &mut s,
            &format!("**{SUMMARY}**\n\n| wall time |\n| --- |\n| 11 min 41 s |\n"),
        );
        assert_eq!(s.tables[0].rows[1], ["before", "11 min 41 s"]);
    }

    #[test]
    fn plugin_times_and_minutes_read_as_written() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b"), "20\n").unwrap();
        std::fs::write(dir.path().join("a"), "1.50\n").unwrap();
        std::fs::write(dir.path().join("broken"), "x").unwrap();
        assert_eq!(
            plugin_times(dir.path()),
            [("a".to_string(), 1.5), ("b".to_string(), 20.0)]
        );
        assert!(plugin_times(&dir.path().join("none")).is_empty());
        assert_eq!(fmt_min(581.4), "9 min 41 s");
        assert_eq!(fmt_min(38.24), "38.2 s");
    }
}
