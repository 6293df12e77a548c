//! `rollcage token new`: a random API token, and the configuration lines
//! that grant it (only its hash goes into the configuration).

use std::process::ExitCode;

use crate::cli::{TokenNewArgs, TokenRoleArg};

pub fn new(args: TokenNewArgs) -> anyhow::Result<ExitCode> {
    // The configuration refuses these lines too: say so before a token is made.
    let unlimited = match args.role {
        TokenRoleArg::Viewer => Some("viewer"),
        TokenRoleArg::Admin => Some("admin"),
        TokenRoleArg::Deployer | TokenRoleArg::Approver | TokenRoleArg::Alerts => None,
    };
    if let Some(role) = unlimited
        && !args.environments.is_empty()
    {
        return Ok(super::bad_input(format!(
            "role {role} is not limited by environment; -e limits only deployers and approvers"
        )));
    }
    let token = rollcage_api::new_token()
        .map_err(|e| anyhow::anyhow!("no randomness from the system: {e}"))?;
    let role = format!("{:?}", args.role).to_lowercase();
    eprintln!("token (shown once; give it to {}):", args.name);
    println!("{token}");
    eprintln!("\nadd to rollcage.toml:\n");
    eprintln!("[server.tokens.{}]", args.name);
    eprintln!("hash = \"{}\"", rollcage_api::hash_token(&token));
    eprintln!("role = \"{role}\"");
    if !args.environments.is_empty() {
        let list: Vec<String> = args
            .environments
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect();
        eprintln!("environments = [{}]", list.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
