//! `rollcage-bench`: Rollcage's benchmark harness. It measures, in one run,
//! the six items of the benchmark issue side by side, prints a table per
//! item, and writes `BENCHMARKS.md` at the repository's root with the
//! machine, the command, the medians, the ratios and each target's verdict.
//!
//! ```text
//! cargo run --release -p rollcage-bench              # the full run (about 5 minutes); writes BENCHMARKS.md
//! cargo run --release -p rollcage-bench -- --quick   # a short smoke run; prints only
//! cargo run --release -p rollcage-bench -- --only 1,3 --out /tmp/b.md
//! cargo run --release -p rollcage-bench -- --first-build   # item 8 alone (about 10 minutes, a quiet machine)
//! ```
//!
//! Timings live here and never in tests: the tests of this crate check its
//! pure helpers only. Modules: `stats` and `table` (summaries and their
//! printing), `machine` (what it ran on), `report` (`BENCHMARKS.md`),
//! `loadgen` (HTTP load and SSE), `child` (hidden child modes), and one
//! module per item: `plugins` (1, 2), `load` (3), `scale` (4), `api` (5),
//! `router` (6), `rollback` (7), `firstbuild` (8, apart: it rebuilds the
//! project from a fresh clone).

mod api;
mod child;
mod firstbuild;
mod load;
mod loadgen;
mod machine;
mod plugins;
mod report;
mod rollback;
mod router;
mod scale;
mod stats;
mod table;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use report::{RunInfo, Section};

const USAGE: &str = "usage: rollcage-bench [--quick] [--only 1,2,...] [--out PATH]
       rollcage-bench --first-build [--rev REV] [--out PATH]

  --quick      a short smoke run (fewer samples, smaller scales); prints only
  --only LIST  only these items (1 plugins, 2 sandbox overhead, 3 component load,
               4 engine scale, 5 API, 6 router, 7 rollback speed); prints only
  --out PATH   also write the report here (a full run writes BENCHMARKS.md at
               the repository's root)
  --first-build  item 8 alone: a fresh clone of HEAD to the demo's first line
               with an empty target folder (about 10 minutes; run it on a
               quiet machine); rewrites its section of BENCHMARKS.md, which
               the other items' runs keep
  --rev REV    with --first-build: measure this commit instead of HEAD (the
               measurement before a change, kept as such by the next run)";

/// What the command line asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Options {
    quick: bool,
    first_build: bool,
    /// The commit `--first-build` measures; HEAD when absent.
    rev: Option<String>,
    only: Option<BTreeSet<u8>>,
    out: Option<PathBuf>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--quick" => o.quick = true,
                "--first-build" => o.first_build = true,
                "--rev" => o.rev = Some(it.next().ok_or("--rev needs a commit")?.clone()),
                "--only" => {
                    let list = it.next().ok_or("--only needs a list such as 1,3")?;
                    let mut set = BTreeSet::new();
                    for n in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        match n.parse::<u8>() {
                            Ok(n @ 1..=7) => {
                                set.insert(n);
                            }
                            _ => return Err(format!("--only: `{n}` is not an item from 1 to 7")),
                        }
                    }
                    o.only = Some(set);
                }
                "--out" => o.out = Some(PathBuf::from(it.next().ok_or("--out needs a path")?)),
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown argument `{other}`")),
            }
        }
        if o.rev.is_some() && !o.first_build {
            return Err("--rev goes with --first-build".into());
        }
        if o.first_build && (o.quick || o.only.is_some()) {
            return Err("--first-build runs alone: not with --quick or --only".into());
        }
        Ok(o)
    }

    fn wants(&self, item: u8) -> bool {
        self.only.as_ref().is_none_or(|s| s.contains(&item))
    }

    /// Where the report goes: `--out`, or for a full run of every item the
    /// repository's `BENCHMARKS.md`. A smoke run or a partial one must not
    /// replace the real numbers.
    fn report_path(&self) -> Option<PathBuf> {
        if let Some(p) = &self.out {
            return Some(p.clone());
        }
        if self.quick || self.only.is_some() {
            return None;
        }
        // --first-build rewrites only its own section of the file.
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        Some(root.canonicalize().unwrap_or(root).join("BENCHMARKS.md"))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Hidden child modes: the harness runs itself as the measured process.
    if let Some(mode) = args.first().filter(|a| a.starts_with("__")) {
        let rest = args[1..].to_vec();
        return match mode.as_str() {
            "__engine-host" => child::run_child(scale::host(rest)),
            "__api-host" => child::run_child(api::host(rest)),
            "__router-host" => child::run_child(router::host(rest)),
            "__demo-service" => router::demo_service(rest),
            _ => {
                eprintln!("rollcage-bench: unknown mode {mode}");
                ExitCode::from(2)
            }
        };
    }
    let options = match Options::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("rollcage-bench: {e}\n");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(if e.is_empty() { 0 } else { 2 });
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(run(options, args))
}

/// The command as a person would type it again.
fn command_line(args: &[String]) -> String {
    let tail = if args.is_empty() {
        String::new()
    } else {
        format!(" -- {}", args.join(" "))
    };
    // `cargo run` sets CARGO for the program it runs.
    if std::env::var_os("CARGO").is_some() {
        format!("cargo run --release -p rollcage-bench{tail}")
    } else {
        let exe = std::env::args()
            .next()
            .unwrap_or_else(|| "rollcage-bench".into());
        format!("{exe}{}", tail.replacen(" --", "", 1))
    }
}

async fn run(options: Options, args: Vec<String>) -> ExitCode {
    let started = Instant::now();
    let machine = machine::Machine::read();
    let info_machine = machine.describe();
    let date = machine::utc_now();
    println!("rollcage-bench: {info_machine}");
    if cfg!(debug_assertions) {
        println!("warning: a debug build; run with --release for numbers worth keeping");
    }
    let work = match tempfile::Builder::new().prefix("rollcage-bench").tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("rollcage-bench: cannot make a temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    if options.first_build {
        return first_build(&options, work.path(), &date);
    }
    let fsync = machine::fsync_latency(work.path());
    let quick = options.quick;
    let mut sections: Vec<Section> = Vec::new();
    let cores = machine.cores;
    let mut since = machine::CpuSnapshot::take();
    // Each item says how much of the machine other processes took while
    // it ran: numbers taken beside a compiler are not an idle machine's.
    let mut show = |mut s: Section, sections: &mut Vec<Section>| {
        let now = machine::CpuSnapshot::take();
        let (others, steal) = now.others_since(&since, cores);
        since = now;
        s.context = format!(
            "While this item ran, other processes used {:.0}% of the machine's CPU{}.",
            others * 100.0,
            if steal >= 0.01 {
                format!(" and the hypervisor took {:.0}%", steal * 100.0)
            } else {
                String::new()
            }
        );
        print!("{}", s.to_text());
        sections.push(s);
    };

    if options.wants(1) || options.wants(2) {
        println!("\nitems 1 and 2: plugin calls...");
        let settings = if quick {
            plugins::Settings {
                rounds: 4,
                batch: 50,
            }
        } else {
            plugins::Settings {
                rounds: 30,
                batch: 100,
            }
        };
        let (s1, mut s2) = plugins::run(&settings, &work.path().join("cache-items-1-2")).await;
        if options.wants(1) {
            show(s1, &mut sections);
            if options.wants(2) {
                // Measured together with item 1: the same context.
                s2.context = sections
                    .last()
                    .map(|s| s.context.clone())
                    .unwrap_or_default();
                print!("{}", s2.to_text());
                sections.push(s2);
            }
        } else {
            show(s2, &mut sections);
        }
    }
    if options.wants(3) {
        println!("\nitem 3: component load...");
        show(load::run(quick, work.path()).await, &mut sections);
    }
    if options.wants(4) {
        println!("\nitem 4: engine scale...");
        show(scale::run(quick, work.path(), fsync).await, &mut sections);
    }
    if options.wants(5) {
        println!("\nitem 5: API...");
        show(api::run(quick, work.path(), fsync).await, &mut sections);
    }
    if options.wants(6) {
        println!("\nitem 6: router...");
        show(router::run(quick, work.path()).await, &mut sections);
    }
    if options.wants(7) {
        println!("\nitem 7: rollback speed...");
        let path = work.path().to_path_buf();
        let section = tokio::task::spawn_blocking(move || rollback::run(quick, &path))
            .await
            .unwrap_or_else(|e| report::Section::failed(7, "Rollback", &e.to_string()));
        show(section, &mut sections);
    }

    let took = started.elapsed().as_secs();
    let mut extra = vec![format!(
        "Disk: a 4 KiB write + `fdatasync` in the temporary directory takes {} (median of 50): the price of each durable SQLite commit.",
        fsync.map_or("n/a".into(), stats::fmt_secs)
    )];
    if let Some(load) = machine::load_average() {
        extra.push(format!("Load average at the end: {load}."));
    }
    let info = RunInfo {
        machine: info_machine,
        command: command_line(&args),
        date,
        duration: format!("{} min {} s", took / 60, took % 60),
        build: format!(
            "{} profile, wasmtime 48.0.8, {}",
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            std::env::consts::ARCH
        ),
        extra,
    };
    println!("\nrun time: {}", info.duration);
    match options.report_path() {
        Some(path) => {
            let previous = std::fs::read_to_string(&path).ok();
            let text = report::with_kept(report::markdown(&info, &sections), previous.as_deref());
            match std::fs::write(&path, text) {
                Ok(()) => println!("wrote {}", path.display()),
                Err(e) => {
                    eprintln!("rollcage-bench: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
        }
        None => {
            println!("(not writing BENCHMARKS.md: a quick or partial run; --out PATH to keep it)")
        }
    }
    ExitCode::SUCCESS
}

/// Item 8 alone, its section written into the report in place.
fn first_build(options: &Options, work: &std::path::Path, date: &str) -> ExitCode {
    println!("\nitem 8: a fresh clone to the demo's first line (about 10 minutes)...");
    let mut section = firstbuild::run(work, options.rev.as_deref());
    let path = options.report_path();
    let previous = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok());
    // The measurement this one replaces stays beside it: before and after.
    if let Some(block) = previous.as_deref().and_then(report::kept_block) {
        firstbuild::keep_previous(&mut section, block);
    }
    print!("{}", section.to_text());
    let Some(path) = path else {
        return ExitCode::SUCCESS;
    };
    let text = report::replace_kept(previous.as_deref(), &section, date);
    match std::fs::write(&path, text) {
        Ok(()) => {
            println!("wrote item 8 into {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rollcage-bench: cannot write {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn options_parse_and_only_full_runs_replace_the_report() {
        let full = Options::parse(&[]).unwrap();
        assert!(full.wants(4));
        assert!(full.report_path().unwrap().ends_with("BENCHMARKS.md"));
        let quick = Options::parse(&args("--quick")).unwrap();
        assert!(quick.quick && quick.report_path().is_none());
        let only = Options::parse(&args("--only 1,3 --out /tmp/b.md")).unwrap();
        assert!(only.wants(3) && !only.wants(2));
        assert_eq!(only.report_path(), Some(PathBuf::from("/tmp/b.md")));
        assert!(Options::parse(&args("--only 7")).unwrap().wants(7));
        assert!(Options::parse(&args("--only 8")).is_err());
        assert!(Options::parse(&args("--bogus")).is_err());
        let before = Options::parse(&args("--first-build --rev 0b4d105")).unwrap();
        assert_eq!(before.rev.as_deref(), Some("0b4d105"));
        assert!(Options::parse(&args("--rev 0b4d105")).is_err());
        assert!(Options::parse(&args("--first-build --rev")).is_err());
    }
}
