//! The `rollcage` command: a thin entry point; the work is in the library
//! crates and in `commands/`.

#[macro_use]
mod out;

mod cli;
mod client;
mod commands;
mod database;
mod host;
mod logging;
mod plugins;
mod signals;
mod sources;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A closed standard output ends a short command quietly, as it does
    // other Unix tools (Rust ignores SIGPIPE, and `println!` would panic);
    // the commands that run on take the signal over as a stop (signals.rs).
    // SAFETY: setting a signal's disposition before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = cli::Cli::parse();
    logging::set_verbosity(cli.verbose);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", logging::redact(&format!("{e:#}")));
            ExitCode::from(1)
        }
    }
}
