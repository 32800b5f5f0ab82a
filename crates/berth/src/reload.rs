//! `berth reload`: asks a running server to re-read its file and prints what it said.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

use crate::cli::ReloadArgs;

pub fn run(args: ReloadArgs) -> anyhow::Result<ExitCode> {
    let admin = match args.admin {
        Some(a) => a,
        None => match berth_config::load(&args.config) {
            Ok(cfg) => cfg.server.admin_listen,
            Err(e) => {
                eprintln!("{e}");
                eprintln!(
                    "berth: not reloading: fix the file first (the running server keeps its configuration)"
                );
                return Ok(ExitCode::from(crate::EXIT_BAD_INPUT));
            }
        },
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, body) = runtime.block_on(post_reload(admin))?;
    let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    match status {
        StatusCode::OK => {
            println!("reloaded");
            for w in parsed["warnings"].as_array().into_iter().flatten() {
                println!("warning: {}", w.as_str().unwrap_or_default());
            }
            Ok(ExitCode::SUCCESS)
        }
        StatusCode::UNPROCESSABLE_ENTITY => {
            eprintln!("{}", parsed["errors"].as_str().unwrap_or_default());
            eprintln!("berth: reload refused; the running configuration keeps serving");
            Ok(ExitCode::from(crate::EXIT_BAD_INPUT))
        }
        other => anyhow::bail!(
            "unexpected answer {other} from {admin}: {}",
            String::from_utf8_lossy(&body)
        ),
    }
}

async fn post_reload(admin: SocketAddr) -> anyhow::Result<(StatusCode, Bytes)> {
    let stream = tokio::net::TcpStream::connect(admin)
        .await
        .with_context(|| {
            format!("cannot reach berth's admin listener at {admin}; is `berth serve` running?")
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::post("/-/reload")
        .header(hyper::header::HOST, admin.to_string())
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}
