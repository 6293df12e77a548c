//! `run` and `runs` against a `rollcage serve` (`--server URL`): the same
//! output and exit codes as in-process, over the HTTP API. A 4xx answer is
//! bad input (exit 2) with the server's message; no answer is exit 1.

use std::collections::BTreeMap;
use std::process::ExitCode;

use rollcage_api::views::{RunPage, RunView};
use rollcage_store::{NewRun, Run, RunStatus};
use serde_json::{Value, json};

use super::run::exit_code;
use super::{bad_input, progress};
use crate::cli::{HostArgs, Output};
use crate::client::{Client, ClientError};

/// The client of `--server`, or the bad-input exit code.
pub fn client(host: &HostArgs) -> Result<Client, ExitCode> {
    let server = host.server.as_deref().unwrap_or_default();
    Client::new(server, host.token.as_deref()).map_err(bad_input)
}

/// An API error as an exit code: 2 for what the request got wrong.
fn failed(e: ClientError) -> anyhow::Result<ExitCode> {
    if e.is_client_error() {
        Ok(bad_input(e.to_string()))
    } else {
        Err(anyhow::anyhow!("{e}"))
    }
}

/// A run as the API shows it, as the store's type (for the shared output).
fn to_run(v: Value) -> anyhow::Result<Run> {
    let v: RunView = serde_json::from_value(v)?;
    Ok(Run {
        id: v.id,
        run: NewRun {
            pipeline: v.pipeline,
            release: v.release,
            notes: v.notes,
            params: v.params.into_iter().collect(),
            stages: v.stages,
            started_by: v.started_by,
            config_hash: v.config_hash,
        },
        status: serde_json::from_value::<RunStatus>(Value::String(v.status))?,
        stage: v.stage,
        reason: v.reason,
        created_ms: v.created_ms,
        updated_ms: v.updated_ms,
    })
}

/// What `rollcage run --server` sends.
pub struct Start {
    pub pipeline: String,
    pub release: String,
    pub notes: Option<String>,
    pub params: Vec<(String, String)>,
    pub stages: Vec<String>,
}

/// Start a run on the server and follow it to its end.
pub async fn run(host: &HostArgs, start: Start, output: Output) -> anyhow::Result<ExitCode> {
    let client = match client(host) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let mut body = json!({
        "pipeline": start.pipeline,
        "release": start.release,
        "params": start.params.into_iter().collect::<BTreeMap<_, _>>(),
    });
    if let Some(n) = start.notes {
        body["notes"] = json!(n);
    }
    if !start.stages.is_empty() {
        body["stages"] = json!(start.stages);
    }
    let run = match client.post("/v1/runs", Some(&body)).await {
        Ok(r) => to_run(r)?,
        Err(e) => return failed(e),
    };
    if output == Output::Text {
        outln!(
            "run {} started on {}",
            run.id,
            host.server.as_deref().unwrap_or("")
        );
    }
    follow(&client, &run.id, output).await
}

/// Print run `id`'s events to its end; exit code of its result.
async fn follow(client: &Client, id: &str, output: Output) -> anyhow::Result<ExitCode> {
    let print = |e: rollcage_store::Event| match output {
        Output::Json => outln!("{}", serde_json::to_string(&e).unwrap_or_default()),
        Output::Text => {
            if let Some(line) = progress::describe(&e, id) {
                outln!("{line}");
            }
        }
    };
    let mut signals = crate::signals::Signals::install()?;
    let followed = tokio::select! {
        r = client.follow(id, 0, print) => r,
        stop = signals.recv() => {
            eprintln!("{}: stopped following; run {id} goes on on the server", stop.describe());
            return Ok(stop.exit_code());
        }
    };
    if let Err(e) = followed {
        return failed(e);
    }
    let run = match client.get(&format!("/v1/runs/{id}")).await {
        Ok(detail) => to_run(detail["run"].clone())?,
        Err(e) => return failed(e),
    };
    match output {
        Output::Text => outln!("{}", progress::summary(&run)),
        Output::Json => outln!("{}", json!({ "run": run })),
    }
    Ok(exit_code(run.status))
}

/// `runs list --server`.
pub async fn list(
    host: &HostArgs,
    pipeline: Option<String>,
    status: Option<String>,
    limit: usize,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let client = match client(host) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let mut query = format!("limit={limit}");
    for (k, v) in [("pipeline", pipeline), ("status", status)] {
        if let Some(v) = v {
            query.push_str(&format!("&{k}={}", encode(&v)));
        }
    }
    let page: RunPage = match client.get(&format!("/v1/runs?{query}")).await {
        Ok(v) => serde_json::from_value(v)?,
        Err(e) => return failed(e),
    };
    let runs = page
        .runs
        .into_iter()
        .map(|v| to_run(serde_json::to_value(v)?))
        .collect::<anyhow::Result<Vec<_>>>()?;
    super::runs::print_list(&runs, output)?;
    Ok(ExitCode::SUCCESS)
}

/// `runs show --server`: the run and its log so far.
pub async fn show(host: &HostArgs, id: &str, output: Output) -> anyhow::Result<ExitCode> {
    let client = match client(host) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let (detail, log) = match (
        client.get(&format!("/v1/runs/{}", encode(id))).await,
        client.get(&format!("/v1/runs/{}/events", encode(id))).await,
    ) {
        (Ok(d), Ok(l)) => (d, l),
        (Err(e), _) | (_, Err(e)) => return failed(e),
    };
    let run = to_run(detail["run"].clone())?;
    let log: Vec<rollcage_store::Event> = serde_json::from_value(log)?;
    super::runs::print_show(&run, &log, output)?;
    Ok(ExitCode::SUCCESS)
}

/// `runs approve|abort --server`: the decision, as the token's holder.
pub async fn decide(host: &HostArgs, id: &str, action: &str) -> anyhow::Result<ExitCode> {
    let client = match client(host) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    match client
        .post(&format!("/v1/runs/{}/{action}", encode(id)), None)
        .await
    {
        Ok(_) => {
            let what = if action == "approve" {
                "approval"
            } else {
                "abort"
            };
            outln!("run {id}: {what} recorded; the run takes it within a second");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => failed(e),
    }
}

/// Percent-encoding for a path segment or query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
