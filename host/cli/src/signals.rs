//! The signals that stop a one-off command (`run`, `runs resume`, `demo`)
//! the way Ctrl-C does: SIGINT from a terminal, SIGTERM from CI systems,
//! `timeout` and service managers, SIGHUP when the terminal goes away,
//! SIGPIPE when whatever reads the output stops reading (`rollcage demo |
//! head`): the command's own lines then go nowhere (see [`crate::out`]),
//! and the next one written brings the signal.
//! Whichever comes, the command gives its runs up (unfinished, their
//! leases released, for `runs resume` or another host) and stops every
//! process it started before it exits with 128 + the signal's number.
//!
//! The handlers are installed when [`Signals::install`] is called, at the
//! start of a command: a signal that arrives while the host is still
//! starting is kept and seen by the first [`Signals::recv`], instead of
//! ending the process with the services it has just started still running.

use std::process::ExitCode;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Which stop was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Interrupt,
    Terminate,
    Hangup,
    /// Standard output was closed by its reader.
    Pipe,
}

impl Stop {
    /// The signal's number.
    pub fn number(self) -> u8 {
        match self {
            Stop::Hangup => 1,
            Stop::Interrupt => 2,
            Stop::Pipe => 13,
            Stop::Terminate => 15,
        }
    }

    /// The shell's convention for a command ended by a signal.
    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(128 + self.number())
    }

    /// What is said when it comes: `interrupted`, `terminated (SIGTERM)`.
    pub fn describe(self) -> &'static str {
        match self {
            Stop::Interrupt => "interrupted",
            Stop::Terminate => "terminated (SIGTERM)",
            Stop::Hangup => "hung up (SIGHUP)",
            Stop::Pipe => "its output was closed (SIGPIPE)",
        }
    }
}

/// The stop signals, listened to from the moment they are installed.
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
    pipe: Signal,
}

impl Signals {
    /// Take over SIGINT, SIGTERM, SIGHUP and SIGPIPE for this process.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
            pipe: signal(SignalKind::pipe())?,
        })
    }

    /// The next stop signal (one that came since the last call or since
    /// they were installed returns at once).
    pub async fn recv(&mut self) -> Stop {
        tokio::select! {
            _ = self.interrupt.recv() => Stop::Interrupt,
            _ = self.terminate.recv() => Stop::Terminate,
            _ = self.hangup.recv() => Stop::Hangup,
            _ = self.pipe.recv() => Stop::Pipe,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(Stop::Interrupt.exit_code(), ExitCode::from(130));
        assert_eq!(Stop::Terminate.exit_code(), ExitCode::from(143));
        assert_eq!(Stop::Hangup.exit_code(), ExitCode::from(129));
        assert_eq!(Stop::Pipe.exit_code(), ExitCode::from(141));
    }

    #[tokio::test]
    async fn a_signal_sent_before_anyone_waits_is_kept() {
        let mut signals = Signals::install().unwrap();
        // SAFETY: raise sends a signal to this process, whose handler
        // tokio installed above.
        unsafe { libc::raise(libc::SIGHUP) };
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), signals.recv()).await;
        assert_eq!(got.unwrap(), Stop::Hangup);
    }
}
