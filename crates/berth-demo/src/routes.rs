//! Request routing: control switches under `/_demo/`, then the app routes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{ALLOW, CONNECTION, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::app::App;
use crate::body::DemoBody;
use crate::{query, respond, streams};

/// Largest `/bytes` body; keeps a typo from making the demo stream gigabytes.
const MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Long enough for the response that triggered a crash to reach the client,
/// short enough that tests see the exit promptly.
const CRASH_GRACE: Duration = Duration::from_millis(100);

pub async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
) -> Result<Response<DemoBody>, Infallible> {
    if let Some(control) = req.uri().path().strip_prefix("/_demo/") {
        return Ok(handle_control(&app, control, &req));
    }

    if let Some(delay) = app.switches.delay() {
        tokio::time::sleep(delay).await;
    }
    if let Some(code) = app.switches.count_served() {
        exit_soon(code, "DEMO_CRASH_AFTER reached");
    }

    if app.switches.failing() {
        return Ok(failing_response(&app, req.uri().path()));
    }
    if app.partial_failure(req.uri().path()) {
        return Ok(respond::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "failing (DEMO_FAIL_EVERY)",
        ));
    }
    Ok(route(&app, req).await)
}

async fn route(app: &App, req: Request<Incoming>) -> Response<DemoBody> {
    let path = req.uri().path();
    let query = req.uri().query();
    match path {
        "/" => respond::json(StatusCode::OK, app.root_body.clone()),
        "/health" => respond::text(StatusCode::OK, "ok"),
        "/health/version" => respond::json(StatusCode::OK, app.health_version_ok.clone()),
        "/echo" => streams::echo(&app.release, req).await,
        "/bytes" => match query::number(query, "n", 1024u64) {
            Ok(n) => respond::with(
                StatusCode::OK,
                HeaderValue::from_static("application/octet-stream"),
                DemoBody::filler(n.min(MAX_BYTES)),
            ),
            Err(msg) => respond::text(StatusCode::BAD_REQUEST, msg),
        },
        "/sse" => {
            let n = query::number(query, "n", 5u64);
            let interval = query::number(query, "interval_ms", 100u64);
            match (n, interval) {
                (Ok(n), Ok(ms)) => streams::sse(n, Duration::from_millis(ms)),
                (Err(msg), _) | (_, Err(msg)) => respond::text(StatusCode::BAD_REQUEST, msg),
            }
        }
        "/ws" => streams::upgrade_echo(req),
        "/trailers" => streams::trailers(),
        _ => match path.strip_prefix("/status/") {
            Some(code) => status(code),
            None => respond::text(StatusCode::NOT_FOUND, "not found\n"),
        },
    }
}

fn status(code: &str) -> Response<DemoBody> {
    // 1xx are not final responses, so hyper cannot send them as one.
    match code.parse::<u16>().ok().filter(|c| *c >= 200) {
        Some(code) => match StatusCode::from_u16(code) {
            Ok(status) => respond::empty(status),
            Err(_) => respond::text(StatusCode::BAD_REQUEST, "status must be 200-999\n"),
        },
        None => respond::text(StatusCode::BAD_REQUEST, "status must be 200-999\n"),
    }
}

fn failing_response(app: &App, path: &str) -> Response<DemoBody> {
    match path {
        "/health" => respond::text(StatusCode::SERVICE_UNAVAILABLE, "failing"),
        "/health/version" => respond::json(
            StatusCode::SERVICE_UNAVAILABLE,
            app.health_version_failing.clone(),
        ),
        _ => respond::text(StatusCode::INTERNAL_SERVER_ERROR, "failing"),
    }
}

fn handle_control(app: &App, name: &str, req: &Request<Incoming>) -> Response<DemoBody> {
    let query = req.uri().query();
    let switches = &app.switches;
    let expected = if name == "state" {
        Method::GET
    } else {
        Method::POST
    };
    if !matches!(name, "state" | "fail" | "slow" | "crash") {
        return respond::text(StatusCode::NOT_FOUND, "unknown control endpoint\n");
    }
    if req.method() != expected {
        let mut res = respond::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        if let Ok(allow) = HeaderValue::from_str(expected.as_str()) {
            res.headers_mut().insert(ALLOW, allow);
        }
        return res;
    }
    let outcome = match name {
        "fail" => query::boolean(query, "on", true).map(|on| {
            switches.set_failing(on);
            None
        }),
        "slow" => match query::param(query, "ms") {
            Some(_) => query::number(query, "ms", 0u64).map(|ms| {
                switches.set_delay_ms(ms);
                None
            }),
            None => Err("slow needs ?ms=N\n".to_string()),
        },
        "crash" => query::number(query, "code", 3i32).map(|code| {
            exit_soon(code, "POST /_demo/crash");
            Some(code)
        }),
        _ => Ok(None),
    };
    match outcome {
        Ok(code) => match code {
            Some(code) => {
                let body = serde_json::json!({ "crashing": true, "code": code }).to_string();
                let mut res = respond::json(StatusCode::OK, body);
                // The process is about to go away; don't invite reuse.
                res.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
                res
            }
            None => respond::json(StatusCode::OK, switches.state_json()),
        },
        Err(msg) => respond::text(StatusCode::BAD_REQUEST, msg),
    }
}

fn exit_soon(code: i32, why: &'static str) {
    eprintln!("berth-demo: exiting with code {code} ({why})");
    tokio::spawn(async move {
        tokio::time::sleep(CRASH_GRACE).await;
        std::process::exit(code);
    });
}
