//! Operating-system processes: starting a command in its own process group
//! with its output appended to a log file, and ending whole groups. Groups,
//! not single processes, because a service is often a shell script or a
//! server that forks workers, and stopping only the leader would orphan
//! the rest (with the port still bound).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout};

/// How long a group gets between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(2);

/// Start `argv` in a new process group whose id is the child's pid, with
/// stdin closed and stdout and stderr appended to `log`.
pub fn spawn(
    argv: &[String],
    env: &BTreeMap<String, String>,
    workdir: Option<&Path>,
    log: &Path,
) -> io::Result<Child> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    if let Some(dir) = log.parent() {
        crate::private::create_dir(dir)?;
    }
    let out = crate::private::append(log)?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        // The supervisor decides when processes end: a dropped handle (an
        // abandoned runtime) must leave them for the next start to reap.
        .kill_on_drop(false);
    if let Some(dir) = workdir {
        cmd.current_dir(dir);
    }
    end_with_host(&mut cmd);
    cmd.spawn()
}

/// Have the kernel kill the child (SIGKILL) when the thread that starts
/// it ends: a host killed outright (SIGKILL, the OOM killer) cannot stop
/// its instances itself, and an instance left running would keep its port
/// and its release alive with no router in front of it. The supervisor
/// starts instances from the async runtime's worker threads, which live as
/// long as the host. Only the group's leader is told; what it forked is
/// reaped by the next start from `state.json`. Linux only; elsewhere the
/// next start reaps everything.
#[cfg(target_os = "linux")]
fn end_with_host(cmd: &mut Command) {
    // SAFETY: getpid is async-signal-safe and runs before the fork.
    let host = unsafe { libc::getpid() };
    // SAFETY: the closure runs between fork and exec and calls only
    // async-signal-safe functions (prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The host died between the fork and the prctl: the signal
            // will never come, so do not start at all.
            if libc::getppid() != host {
                return Err(io::Error::other("the host ended while starting it"));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn end_with_host(_: &mut Command) {}

/// Send `signal` to process group `pgid`; false when the group is gone.
/// Refuses the groups that would hit the host itself or everything
/// (0, 1, and the host's own group), whatever a state file says.
pub fn signal_group(pgid: u32, signal: libc::c_int) -> bool {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return false;
    };
    // SAFETY: getpgrp and killpg take and return plain integers.
    if pgid <= 1 || pgid == unsafe { libc::getpgrp() } {
        return false;
    }
    // SAFETY: as above; killpg has no memory effects.
    unsafe { libc::killpg(pgid, signal) == 0 }
}

/// Whether process `pid` exists and is not a zombie (a zombie has exited;
/// it only waits for its parent to collect the status).
pub fn alive(pid: u32) -> bool {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks for existence.
    if raw <= 0 || unsafe { libc::kill(raw, 0) } != 0 {
        return false;
    }
    stat_fields(pid).is_none_or(|f| f.first().is_none_or(|state| state != "Z"))
}

/// When process `pid` started, in clock ticks since boot (Linux; `None`
/// elsewhere or when it is gone). Recorded with each pid so that a restart
/// never kills a stranger that was given a recycled pid.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// The fields of `/proc/<pid>/stat` after the command name, which may
/// itself contain spaces and parentheses.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Stop a child we started and its group: SIGTERM, up to [`GRACE`] to exit,
/// then SIGKILL for whatever of the group is left. Returns once the child
/// has been waited for, so its pid is free again.
pub async fn stop_group(child: &mut Child) {
    let Some(pgid) = child.id() else {
        return; // already waited for
    };
    signal_group(pgid, libc::SIGTERM);
    if timeout(GRACE, child.wait()).await.is_err() {
        tracing::warn!(pgid, "process group ignored SIGTERM, killing it");
    }
    signal_group(pgid, libc::SIGKILL);
    let _ = child.wait().await;
}

/// End groups left behind by a previous host: each `(pgid, start time)`
/// whose leader is still ours gets SIGTERM, then SIGKILL after [`GRACE`].
/// Returns the groups that were signalled.
pub async fn reap_groups(groups: &[(u32, Option<u64>)]) -> Vec<u32> {
    let mut reaped = Vec::new();
    for &(pgid, started) in groups {
        // A leader with another start time is a different process that was
        // given the same pid; a missing leader may still have left members
        // in its group, which only ever belongs to us.
        let recycled =
            matches!((start_time(pgid), started), (Some(now), Some(then)) if now != then);
        if !recycled && signal_group(pgid, libc::SIGTERM) {
            reaped.push(pgid);
        }
    }
    let deadline = Instant::now() + GRACE;
    while reaped.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        sleep(Duration::from_millis(50)).await;
    }
    for &pgid in &reaped {
        signal_group(pgid, libc::SIGKILL);
    }
    reaped
}

/// An exit status as the admin API shows it: `exit status: 1`, or
/// `signal: 9 (SIGKILL)`.
pub fn describe(status: ExitStatus) -> String {
    status.to_string()
}

/// The shell convention for an exit code: the code, or 128 + signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, log: &Path) -> Child {
        spawn(
            &["sh".into(), "-c".into(), script.into()],
            &BTreeMap::from([("GREETING".into(), "hi".into())]),
            None,
            log,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn output_is_appended_to_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a/b.log");
        for _ in 0..2 {
            let status = sh("echo $GREETING; echo oops >&2; exit 3", &log)
                .wait()
                .await
                .unwrap();
            assert_eq!(exit_code(status), 3);
        }
        assert_eq!(fs::read_to_string(&log).unwrap(), "hi\noops\nhi\noops\n");
    }

    #[tokio::test]
    async fn stopping_ends_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let mut child = sh(
            &format!("sleep 300 & echo $! > {}; wait", pidfile.display()),
            &dir.path().join("log"),
        );
        let leader = child.id().unwrap();
        let grandchild = loop {
            if let Ok(p) = fs::read_to_string(&pidfile)
                && let Ok(p) = p.trim().parse::<u32>()
            {
                break p;
            }
            sleep(Duration::from_millis(20)).await;
        };
        assert!(alive(leader) && alive(grandchild));
        assert!(start_time(leader).is_some());
        stop_group(&mut child).await;
        assert!(!alive(leader));
        let deadline = Instant::now() + GRACE;
        while alive(grandchild) && Instant::now() < deadline {
            sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive(grandchild));
    }

    /// A host killed outright takes its instances with it: the child's
    /// leader is killed by the kernel when the thread that started it ends.
    #[cfg(target_os = "linux")]
    #[test]
    fn an_instance_ends_with_the_thread_that_started_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let pid = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let child = rt.block_on(async { sh("sleep 300", &log) });
            child.id().unwrap()
        })
        .join()
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while alive(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(pid), "pid {pid} outlived the thread that started it");
    }

    #[tokio::test]
    async fn reaping_skips_recycled_pids_and_the_hosts_own_group() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = sh("sleep 300", &dir.path().join("log"));
        let pid = child.id().unwrap();
        let started = start_time(pid);
        // A different recorded start time: a stranger with our old pid.
        assert!(
            reap_groups(&[(pid, started.map(|t| t + 1))])
                .await
                .is_empty()
        );
        assert!(alive(pid));
        let own = unsafe { libc::getpgrp() } as u32;
        assert!(
            reap_groups(&[(0, None), (1, None), (own, None)])
                .await
                .is_empty()
        );
        assert_eq!(reap_groups(&[(pid, started)]).await, [pid]);
        let status = child.wait().await.unwrap();
        assert_eq!(describe(status), "signal: 15 (SIGTERM)");
    }
}
