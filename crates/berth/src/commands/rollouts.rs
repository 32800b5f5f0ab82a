//! `berth rollback`, `berth promote`, `berth abort`, `berth pause`, `berth resume`.

use hyper::Method;
use serde_json::json;

use super::apps::{AppArgs, app_path, print_instances};
use super::{field, list, print};
use crate::client::Client;

#[derive(clap::Args, Debug)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub app: AppArgs,
    /// The release to serve (berth releases lists them); the previous one when left out
    pub release: Option<String>,
}

pub async fn rollback(c: &Client, args: &RollbackArgs, json: bool) -> anyhow::Result<()> {
    let body = json!({ "release": args.release });
    let r = c
        .call(Method::POST, &app_path(&args.app, "rollback"), Some(body))
        .await?;
    print(json, &r, |r| {
        for s in list(r, "steps") {
            println!("  {}", s.as_str().unwrap_or_default());
        }
        println!(
            "{} in {} is back on release {}",
            args.app.app,
            args.app.env,
            field(r, "release")
        );
        print_instances(list(r, "instances"));
    });
    Ok(())
}

/// `promote`, `abort`, `pause` or `resume` for the deploy in progress.
pub async fn control(c: &Client, a: &AppArgs, action: &str, json: bool) -> anyhow::Result<()> {
    let r = c
        .call(
            Method::POST,
            &app_path(a, &format!("rollout/{action}")),
            None,
        )
        .await?;
    print(json, &r, |_| {
        println!(
            "{action} sent to the deploy of {} in {}; berth deploys {} --env {} shows what it did",
            a.app, a.env, a.app, a.env
        );
    });
    Ok(())
}
