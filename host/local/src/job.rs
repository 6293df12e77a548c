//! Jobs: a command run to completion beside a service (a database
//! migration before a release, say), in its own process group so that a
//! timeout ends everything it started.

use std::io;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::spec::PreparedJob;
use crate::{logs, process};

/// How much of a job's output the answer carries (its end).
pub const OUTPUT_LIMIT: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobOutcome {
    /// The exit code, 128 + signal when killed by one, 127 when the
    /// command could not start, -1 on timeout.
    pub exit_code: i32,
    /// Combined stdout and stderr, the last [`OUTPUT_LIMIT`] bytes.
    pub output: String,
}

/// Run a job with its output in `log` (started afresh each run).
pub async fn run(
    name: &str,
    job: &PreparedJob,
    workdir: Option<&Path>,
    log: &Path,
) -> io::Result<JobOutcome> {
    if let Some(dir) = log.parent() {
        crate::private::create_dir(dir)?;
    }
    crate::private::create(log)?;
    let mut child = match process::spawn(&job.command, &job.env, workdir, log) {
        Ok(child) => child,
        Err(e) => {
            return Ok(JobOutcome {
                exit_code: 127,
                output: format!("cannot start `{}`: {e}\n", job.command[0]),
            });
        }
    };
    let pgid = child.id().unwrap_or(0);
    let limit = Duration::from_millis(job.timeout_ms);
    let exit_code = match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => {
            // Whatever the job left running in its group goes with it.
            process::signal_group(pgid, libc::SIGKILL);
            Some(process::exit_code(status?))
        }
        Err(_) => {
            process::stop_group(&mut child).await;
            None
        }
    };
    let mut output = logs::tail_bytes(log, OUTPUT_LIMIT)?;
    if exit_code.is_none() {
        if !output.is_empty() && !output.ends_with('\n') {
            output.push('\n');
        }
        output.push_str(&format!(
            "[rollcage] job `{name}` timed out after {} ms and was killed\n",
            job.timeout_ms
        ));
    }
    Ok(JobOutcome {
        exit_code: exit_code.unwrap_or(-1),
        output,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn job(script: &str, timeout_ms: u64) -> PreparedJob {
        PreparedJob {
            command: vec!["sh".into(), "-c".into(), script.into()],
            env: BTreeMap::from([("WHO".into(), "job".into())]),
            timeout_ms,
        }
    }

    #[tokio::test]
    async fn exit_code_and_combined_output() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("logs/job-x.log");
        let out = run(
            "x",
            &job("echo out $WHO; echo err >&2; exit 3", 5000),
            None,
            &log,
        )
        .await
        .unwrap();
        assert_eq!(out.exit_code, 3);
        assert_eq!(out.output, "out job\nerr\n");
        // A second run starts its log afresh.
        let out = run("x", &job("echo again", 5000), Some(dir.path()), &log)
            .await
            .unwrap();
        assert_eq!((out.exit_code, out.output.as_str()), (0, "again\n"));
    }

    #[tokio::test]
    async fn output_is_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let script = "head -c 100000 /dev/zero | tr '\\0' a; echo; echo end";
        let out = run("big", &job(script, 5000), None, &dir.path().join("j.log"))
            .await
            .unwrap();
        assert_eq!(out.output.len() as u64, OUTPUT_LIMIT);
        assert!(out.output.ends_with("a\nend\n"));
    }

    #[tokio::test]
    async fn a_timeout_kills_the_group_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let began = std::time::Instant::now();
        let out = run(
            "slow",
            &job("echo started; sleep 30", 300),
            None,
            &dir.path().join("j.log"),
        )
        .await
        .unwrap();
        assert!(began.elapsed() < Duration::from_secs(5));
        assert_eq!(out.exit_code, -1);
        assert!(out.output.starts_with("started\n"));
        assert!(
            out.output
                .ends_with("[rollcage] job `slow` timed out after 300 ms and was killed\n")
        );
    }

    #[tokio::test]
    async fn a_missing_program_is_exit_127() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = job("", 1000);
        j.command = vec!["/nonexistent/migrate".into()];
        let out = run("m", &j, None, &dir.path().join("j.log")).await.unwrap();
        assert_eq!(out.exit_code, 127);
        assert!(
            out.output
                .starts_with("cannot start `/nonexistent/migrate`")
        );
    }
}
