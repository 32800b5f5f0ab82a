//! `berth reload`: asks a running server to re-read its file and prints what it said.

use std::process::ExitCode;

use hyper::Method;

use crate::cli::ReloadArgs;
use crate::client::{Client, block_on, exit, fail};

/// The server is found by `--admin`, else the admin listener named in `--config` (when that
/// file exists), else the global remote.
pub fn run(args: ReloadArgs, remote: Option<&str>) -> anyhow::Result<ExitCode> {
    let remote = match (args.admin, remote) {
        (Some(a), _) => Some(format!("http://{a}")),
        (None, Some(r)) => Some(r.to_owned()),
        (None, None) if args.config.exists() => match berth_config::load(&args.config) {
            Ok(cfg) => Some(format!("http://{}", cfg.server.admin_listen)),
            Err(e) => {
                eprintln!("{e}");
                return Err(fail(
                    exit::BAD_INPUT,
                    "not reloading: fix the file first (the running server keeps its configuration)",
                ));
            }
        },
        (None, None) => None,
    };
    let client = Client::new(remote.as_deref());
    block_on(async move {
        match client.call(Method::POST, "/api/v1/reload", None).await {
            Ok(v) => {
                println!("reloaded");
                for w in v["warnings"].as_array().into_iter().flatten() {
                    println!("warning: {}", w.as_str().unwrap_or_default());
                }
                Ok(())
            }
            Err(e) => {
                let refused = e
                    .downcast_ref::<crate::client::CliError>()
                    .is_some_and(|c| c.code == exit::BAD_INPUT);
                if refused {
                    eprintln!("{e}");
                    Err(fail(
                        exit::BAD_INPUT,
                        "reload refused; the running configuration keeps serving",
                    ))
                } else {
                    Err(e)
                }
            }
        }
    })
}
