//! Standard output that does not panic when its reader has gone.
//!
//! `println!` panics when standard output is a pipe whose reader closed it
//! (`rollcage demo | head -1`). The commands that run on (`run`, `runs
//! resume`, `demo`, following a run on a server) print through [`outln!`]
//! and [`out!`] instead, which drop a failed write: the closed pipe also
//! raises SIGPIPE, which those commands take as a stop, like Ctrl-C
//! ([`crate::signals`]). The short commands keep `println!`, and `main`
//! gives SIGPIPE back its default action for them, so they end quietly
//! as other Unix tools do.

use std::io::Write;

/// Write `args` and a newline to standard output; a failed write is
/// dropped (see the module's docs).
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"));
}

/// Write `args` to standard output; a failed write is dropped.
pub fn text(args: std::fmt::Arguments<'_>) {
    let _ = std::io::stdout().lock().write_fmt(args);
}

/// `println!` that never panics.
macro_rules! outln {
    () => {
        $crate::out::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))
    };
}

/// `print!` that never panics.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::text(format_args!($($arg)*))
    };
}
