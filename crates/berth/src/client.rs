//! The CLI's client of the admin API: every command that changes or reads berth's state goes
//! through the API (over TCP or the Unix socket), never to the database directly.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

/// Exit statuses the CLI documents in `berth --help`.
pub mod exit {
    pub const OK: u8 = 0;
    /// berth could not be reached, or failed.
    pub const FAILED: u8 = 1;
    /// The input was refused (bad arguments, invalid config).
    pub const BAD_INPUT: u8 = 2;
    /// Not logged in, or not allowed (role, environment, network, throttled).
    pub const DENIED: u8 = 3;
    /// What was named does not exist, or already exists.
    pub const NOT_FOUND_OR_CONFLICT: u8 = 4;
}

pub const DEFAULT_REMOTE: &str = "http://127.0.0.1:9180";

/// A request body: JSON in memory, or a release archive read from its file as it is sent.
pub type Payload = BoxBody<Bytes, std::io::Error>;

fn in_memory(bytes: Bytes) -> Payload {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// Chunk size when an archive is streamed from its file.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// `file` from its current position to its end, read a chunk at a time, so an upload of any
/// size needs no more memory than one chunk.
pub fn file_payload(file: std::fs::File) -> Payload {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::from_std(file);
    let chunks = futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; UPLOAD_CHUNK];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(hyper::body::Frame::data(Bytes::from(buf))), Some(file)))
            }
            // The error ends the body; hyper aborts the request with it.
            Err(e) => Some((Err(e), None)),
        }
    });
    StreamBody::new(chunks).boxed()
}

/// An error that already knows its exit status and what to tell the user.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

pub fn fail(code: u8, message: impl Into<String>) -> anyhow::Error {
    CliError {
        code,
        message: message.into(),
    }
    .into()
}

/// Exit code for an error: a [`CliError`]'s own, otherwise a plain failure.
pub fn exit_code(e: &anyhow::Error) -> ExitCode {
    ExitCode::from(
        e.downcast_ref::<CliError>()
            .map_or(exit::FAILED, |c| c.code),
    )
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub remote: String,
    pub token: String,
}

/// `$BERTH_CREDENTIALS`, else `$XDG_CONFIG_HOME/berth/credentials.json`, else
/// `~/.config/berth/credentials.json`.
pub fn credentials_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BERTH_CREDENTIALS") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("berth").join("credentials.json"))
}

pub fn load_credentials() -> Option<Credentials> {
    let path = credentials_path()?;
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

pub struct Client {
    remote: String,
    token: Option<String>,
}

impl Client {
    /// Remote: the flag (or BERTH_REMOTE), else the saved login's, else the local default.
    /// Token: BERTH_TOKEN, else the saved login's (tokens never come from the command line,
    /// where other users could read them in the process list).
    pub fn new(remote_flag: Option<&str>) -> Client {
        let saved = load_credentials();
        let remote = remote_flag
            .map(str::to_owned)
            .or_else(|| saved.as_ref().map(|c| c.remote.clone()))
            .unwrap_or_else(|| DEFAULT_REMOTE.to_owned());
        let token = std::env::var("BERTH_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .or_else(|| saved.map(|c| c.token));
        Client { remote, token }
    }

    pub fn with_token(remote: &str, token: String) -> Client {
        Client {
            remote: remote.to_owned(),
            token: Some(token),
        }
    }

    pub fn remote(&self) -> &str {
        &self.remote
    }

    /// One API call. Returns the JSON body of a 2xx answer; any other answer becomes a
    /// [`CliError`] with the API's own message and the matching exit status.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let payload = in_memory(Bytes::from(body.map(|b| b.to_string()).unwrap_or_default()));
        let resp = self
            .send(method, path, "application/json", &[], payload)
            .await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        answer(status, &bytes)
    }

    /// A call whose body is not JSON (a release archive, see [`file_payload`]), with extra
    /// headers (give its `content-length`: a streamed body has no size of its own).
    pub async fn upload(
        &self,
        path: &str,
        content_type: &str,
        headers: &[(&str, String)],
        body: Payload,
    ) -> anyhow::Result<serde_json::Value> {
        let resp = self
            .send(Method::POST, path, content_type, headers, body)
            .await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        answer(status, &bytes)
    }

    /// A GET whose answer is streamed: `each` gets the body's chunks as they arrive (logs
    /// followed for as long as the caller keeps reading).
    pub async fn stream(&self, path: &str, mut each: impl FnMut(&[u8])) -> anyhow::Result<()> {
        let resp = self
            .send(
                Method::GET,
                path,
                "application/json",
                &[],
                in_memory(Bytes::new()),
            )
            .await?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = body.collect().await?.to_bytes();
            return answer(status, &bytes).map(|_| ());
        }
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                each(&data);
            }
        }
        Ok(())
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        headers: &[(&str, String)],
        payload: Payload,
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "berth")
            .header(header::CONTENT_TYPE, content_type);
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(payload)?;
        let unreachable = || {
            fail(
                exit::FAILED,
                format!(
                    "cannot reach berth's admin API at {}; is `berth serve` running? (use --remote URL or unix:PATH)",
                    self.remote
                ),
            )
        };
        let resp = if let Some(path) = self.remote.strip_prefix("unix:") {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(|_| unreachable())?;
            exchange(stream, req).await?
        } else {
            let hostport = self
                .remote
                .strip_prefix("http://")
                .ok_or_else(|| {
                    fail(
                        exit::BAD_INPUT,
                        format!("remote `{}` must start with http:// or unix:", self.remote),
                    )
                })?
                .trim_end_matches('/');
            let stream = tokio::net::TcpStream::connect(hostport)
                .await
                .map_err(|_| unreachable())?;
            exchange(stream, req).await?
        };
        Ok(resp)
    }
}

/// The JSON body of a 2xx answer, or a [`CliError`] with the API's message and the exit
/// status that matches the HTTP status.
fn answer(status: StatusCode, bytes: &[u8]) -> anyhow::Result<serde_json::Value> {
    let value: serde_json::Value = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned())
        })
    };
    if status.is_success() {
        return Ok(value);
    }
    let message = value["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| value.to_string());
    let code = match status {
        StatusCode::UNAUTHORIZED => {
            return Err(fail(
                exit::DENIED,
                format!(
                    "{message}\nberth: not logged in or the token is not valid: run `berth login`"
                ),
            ));
        }
        StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS => exit::DENIED,
        StatusCode::NOT_FOUND | StatusCode::CONFLICT => exit::NOT_FOUND_OR_CONFLICT,
        // The request was fine; what it started failed (a build, instances never healthy,
        // a pre-deploy hook, or analysis or a smoke check rolled it back, or it was cancelled
        // while it waited for approval).
        StatusCode::UNPROCESSABLE_ENTITY
            if matches!(
                value["code"].as_str(),
                Some("build_failed" | "unhealthy" | "hook_failed" | "rolled_back" | "cancelled")
            ) =>
        {
            exit::FAILED
        }
        s if s.is_client_error() => exit::BAD_INPUT,
        _ => exit::FAILED,
    };
    Err(fail(code, message))
}

async fn exchange<S>(
    stream: S,
    req: Request<Payload>,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    sender
        .send_request(req)
        .await
        .context("the admin API closed the connection")
}

/// Runs an async command body on a small runtime.
pub fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(
    f: F,
) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(f)?;
    Ok(ExitCode::from(exit::OK))
}
