//! `demo-service --port N`: the demo service of `rollcage demo`. Its release,
//! error rate and extra latency come from `VERSION`/`RELEASE`, `ERROR_RATE`
//! and `EXTRA_LATENCY_MS`.

use std::process::ExitCode;

use rollcage_demo_service::{Settings, serve};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let settings = match Settings::from_env_and_args(std::env::args().skip(1)) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("demo-service: {e}");
            return ExitCode::from(2);
        }
    };
    match serve(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-service: {e}");
            ExitCode::FAILURE
        }
    }
}
