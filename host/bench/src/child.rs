//! The benchmark's own binary run as a child process in a hidden mode
//! (`__engine-host`, `__api-host`, `__router-host`, `__demo-service`), so
//! that what is measured (a host, a router) has a process of its own: its
//! peak RSS is its own, and it does not share an executor with the load
//! generator, as HAProxy does not.
//!
//! The protocol is JSON lines: the child writes one line when it is ready
//! (its ports, its run ids) and one per result; the parent may write lines
//! to it (`go`); the child ends when its stdin closes, which also happens
//! if the parent dies.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// A running child in a hidden mode.
pub struct ChildProc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl ChildProc {
    /// Start this binary with `args` (the mode first).
    pub fn spawn(args: &[String]) -> Result<ChildProc, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
        let mut child = tokio::process::Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", args.join(" ")))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        Ok(ChildProc {
            name: args.first().cloned().unwrap_or_default(),
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// The next JSON line the child writes, within `timeout`.
    pub async fn read_json(&mut self, timeout: Duration) -> Result<Value, String> {
        let name = self.name.clone();
        let read = async {
            while let Some(line) = self.lines.next_line().await.map_err(|e| e.to_string())? {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if let Some(e) = v.get("error").and_then(Value::as_str) {
                        return Err(format!("{name}: {e}"));
                    }
                    return Ok(v);
                }
            }
            Err(format!("{name} ended without an answer"))
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| format!("{name} did not answer within {} s", timeout.as_secs()))?
    }

    /// Write one line to the child.
    pub async fn send(&mut self, line: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        stdin.flush().await.map_err(|e| e.to_string())
    }

    /// Close its stdin (its signal to stop cleanly) and wait; kill it if
    /// it does not stop within `grace`.
    pub async fn finish(mut self, grace: Duration) {
        drop(self.stdin.take());
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// In a child: write one JSON line to the parent.
pub fn announce(value: &Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

/// In a child: the next line from the parent (`None` once stdin closes).
pub async fn next_line(stdin: &mut Lines<BufReader<tokio::io::Stdin>>) -> Option<String> {
    stdin.next_line().await.ok().flatten()
}

/// In a child: stdin's lines.
pub fn stdin_lines() -> Lines<BufReader<tokio::io::Stdin>> {
    BufReader::new(tokio::io::stdin()).lines()
}

/// In a child: wait until the parent closes stdin.
pub async fn until_stdin_closes(stdin: &mut Lines<BufReader<tokio::io::Stdin>>) {
    while next_line(stdin).await.is_some() {}
}

/// A child mode's entry: run `body` on a multi-threaded runtime (as the
/// host runs), report its error as a JSON line, exit 1 on error.
pub fn run_child<F>(body: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = Result<(), String>>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match rt.block_on(body) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            announce(&serde_json::json!({ "error": e }));
            std::process::ExitCode::FAILURE
        }
    }
}
