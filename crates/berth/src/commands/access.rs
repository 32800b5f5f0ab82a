//! `berth users ...` and `berth tokens ...`.

use hyper::Method;
use serde_json::json;

use super::{field, list, print};
use crate::client::Client;

pub async fn users_add(
    c: &Client,
    name: &str,
    grants: &[String],
    json: bool,
) -> anyhow::Result<()> {
    let user = c
        .call(
            Method::POST,
            "/api/v1/users",
            Some(json!({"name": name, "grants": grants})),
        )
        .await?;
    print(json, &user, |u| {
        println!("added user {} ({})", field(u, "name"), field(u, "grants"))
    });
    Ok(())
}

pub async fn users_remove(c: &Client, name: &str, json: bool) -> anyhow::Result<()> {
    let out = c
        .call(Method::DELETE, &format!("/api/v1/users/{name}"), None)
        .await?;
    print(json, &out, |_| {
        println!("removed user {name} and revoked all its tokens")
    });
    Ok(())
}

pub async fn users_list(c: &Client, json: bool) -> anyhow::Result<()> {
    let users = c.call(Method::GET, "/api/v1/users", None).await?;
    print(json, &users, |v| {
        println!("{:<20} GRANTS", "NAME");
        for u in list(v, "users") {
            println!("{:<20} {}", field(u, "name"), field(u, "grants"));
        }
    });
    Ok(())
}

pub async fn tokens_create(
    c: &Client,
    user: Option<&str>,
    label: &str,
    json: bool,
) -> anyhow::Result<()> {
    let mut body = json!({ "label": label });
    if let Some(u) = user {
        body["user"] = json!(u);
    }
    let t = c.call(Method::POST, "/api/v1/tokens", Some(body)).await?;
    print(json, &t, |t| {
        println!("{}", field(t, "token"));
        eprintln!(
            "token {} for {} created; it is shown only this once (give it to `berth login` on stdin)",
            field(t, "id"),
            field(t, "user")
        );
    });
    Ok(())
}

pub async fn tokens_revoke(c: &Client, id: i64, json: bool) -> anyhow::Result<()> {
    let out = c
        .call(Method::DELETE, &format!("/api/v1/tokens/{id}"), None)
        .await?;
    print(json, &out, |_| println!("revoked token {id}"));
    Ok(())
}

pub async fn tokens_list(c: &Client, user: Option<&str>, json: bool) -> anyhow::Result<()> {
    let path = match user {
        Some(u) => format!("/api/v1/tokens?user={u}"),
        None => "/api/v1/tokens".to_owned(),
    };
    let tokens = c.call(Method::GET, &path, None).await?;
    print(json, &tokens, |v| {
        println!("{:<6} {:<16} {:<20} LAST USED", "ID", "USER", "LABEL");
        for t in list(v, "tokens") {
            println!(
                "{:<6} {:<16} {:<20} {}",
                field(t, "id"),
                field(t, "user"),
                field(t, "label"),
                field(t, "last_used")
            );
        }
    });
    Ok(())
}
