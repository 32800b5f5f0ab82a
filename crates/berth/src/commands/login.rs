//! `berth login`, `berth logout`, `berth whoami`.

use std::io::Read;
use std::path::PathBuf;

use hyper::Method;

use crate::client::{Client, Credentials, credentials_path, exit, fail};
use crate::state::write_private;

/// Reads the token from a file or stdin (never from the command line), checks it against
/// the server and saves both in the credentials file with mode 0600.
pub async fn login(remote: &str, token_file: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let token = match token_file {
        Some(p) => std::fs::read_to_string(&p)
            .map_err(|e| fail(exit::BAD_INPUT, format!("cannot read {}: {e}", p.display())))?,
        None => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        }
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        return Err(fail(
            exit::BAD_INPUT,
            "no token given: pass --token-file FILE or pipe it on stdin",
        ));
    }
    let client = Client::with_token(remote, token.clone());
    let me = client.call(Method::GET, "/api/v1/whoami", None).await?;
    let path = credentials_path().ok_or_else(|| {
        fail(
            exit::FAILED,
            "no place for credentials: set HOME or BERTH_CREDENTIALS",
        )
    })?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let creds = Credentials {
        remote: remote.to_owned(),
        token,
    };
    write_private(&path, serde_json::to_string_pretty(&creds)?.as_bytes())?;
    super::print(json, &me, |me| {
        println!(
            "logged in to {remote} as {} ({}); credentials saved in {}",
            super::field(me, "user"),
            super::field(me, "grants"),
            path.display()
        )
    });
    Ok(())
}

pub fn logout() -> anyhow::Result<()> {
    if let Some(path) = credentials_path()
        && path.exists()
    {
        std::fs::remove_file(&path)?;
        println!("removed {}", path.display());
    } else {
        println!("not logged in");
    }
    Ok(())
}

pub async fn whoami(client: &Client, json: bool) -> anyhow::Result<()> {
    let me = client.call(Method::GET, "/api/v1/whoami", None).await?;
    super::print(json, &me, |me| {
        println!(
            "{} ({}) at {}",
            super::field(me, "user"),
            super::field(me, "grants"),
            client.remote()
        )
    });
    Ok(())
}
