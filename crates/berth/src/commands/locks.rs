//! `berth lock`, `berth unlock`, `berth approve`.

use hyper::Method;
use serde_json::json;

use super::apps::{AppArgs, app_path};
use super::{encode, field, print, time_text};
use crate::client::Client;

#[derive(clap::Args, Debug)]
pub struct LockArgs {
    #[command(flatten)]
    pub app: AppArgs,
    /// Why (shown to whoever tries to deploy meanwhile)
    #[arg(long, required_unless_present = "show", conflicts_with = "show")]
    pub reason: Option<String>,
    /// Only show whether the app is locked, by whom and why
    #[arg(long)]
    pub show: bool,
}

#[derive(clap::Args, Debug)]
pub struct UnlockArgs {
    #[command(flatten)]
    pub app: AppArgs,
    /// Remove the lock even when another user holds it (recorded in the audit log)
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::Args, Debug)]
pub struct ApproveArgs {
    #[command(flatten)]
    pub app: AppArgs,
    /// The deployment waiting (berth deploys shows its id); the one waiting when left out
    pub deployment: Option<i64>,
}

/// `locked by alice since …: "reason"`.
pub fn describe(lock: &serde_json::Value) -> String {
    format!(
        "locked by {} since {}: {}",
        field(lock, "owner"),
        time_text(&lock["since"]),
        field(lock, "reason")
    )
}

pub async fn lock(c: &Client, args: &LockArgs, json: bool) -> anyhow::Result<()> {
    let a = &args.app;
    let path = app_path(a, "lock");
    let r = match &args.reason {
        Some(reason) if !args.show => {
            c.call(Method::PUT, &path, Some(json!({ "reason": reason })))
                .await?
        }
        _ => c.call(Method::GET, &path, None).await?,
    };
    print(json, &r, |r| {
        if r["locked"].as_bool() == Some(true) {
            println!(
                "deploys of {} in {} are {}",
                a.app,
                a.env,
                describe(&r["lock"])
            );
            println!("unlock with: berth unlock {} --env {}", a.app, a.env);
        } else {
            println!("deploys of {} in {} are not locked", a.app, a.env);
        }
    });
    Ok(())
}

pub async fn unlock(c: &Client, args: &UnlockArgs, json: bool) -> anyhow::Result<()> {
    let a = &args.app;
    let mut path = app_path(a, "lock");
    if args.force {
        path.push_str(&format!("?force={}", encode("true")));
    }
    let r = c.call(Method::DELETE, &path, None).await?;
    print(json, &r, |r| {
        let forced = if r["forced"].as_bool() == Some(true) {
            format!(" (forced; it was {})", describe(&r["unlocked"]))
        } else {
            String::new()
        };
        println!("deploys of {} in {} are unlocked{forced}", a.app, a.env);
    });
    Ok(())
}

pub async fn approve(c: &Client, args: &ApproveArgs, json: bool) -> anyhow::Result<()> {
    let a = &args.app;
    let r = c
        .call(
            Method::POST,
            &app_path(a, "approve"),
            Some(json!({ "deployment": args.deployment })),
        )
        .await?;
    print(json, &r, |r| {
        println!(
            "approved deployment {} of {} in {}; it starts now (berth deploys {} --env {} \
             follows it)",
            field(r, "deployment"),
            a.app,
            a.env,
            a.app,
            a.env
        );
    });
    Ok(())
}
