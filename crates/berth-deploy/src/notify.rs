//! Webhook notices of a deploy's start, promotion, success, failure and rollback
//! (`[[deploy.notify]]`). Sent in the background with a timeout: a slow or broken webhook
//! never holds up or fails a deploy, and its failure is logged.

use std::sync::OnceLock;
use std::time::Duration;

use berth_config::app::{NotifyFormat, NotifySpec};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

/// How long one webhook call may take.
const TIMEOUT: Duration = Duration::from_secs(10);

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// What happened, as sent in the `json` format.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    /// `started`, `promoted`, `succeeded`, `failed` or `rolled_back`.
    pub event: &'static str,
    pub app: String,
    pub environment: String,
    pub release: String,
    pub previous: Option<String>,
    pub strategy: String,
    pub detail: String,
}

impl Notice {
    fn text(&self) -> String {
        let previous = self
            .previous
            .as_deref()
            .map(|p| format!(" (was {p})"))
            .unwrap_or_default();
        format!(
            "berth: {} {} {} in {}{previous} [{}]: {}",
            self.app,
            self.event.replace('_', " "),
            self.release,
            self.environment,
            self.strategy,
            self.detail
        )
    }
}

fn client() -> Option<&'static Client<Https, Full<Bytes>>> {
    static CLIENT: OnceLock<Option<Client<Https, Full<Bytes>>>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let connector = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
                Ok(b) => b.https_or_http().enable_http1().build(),
                Err(e) => {
                    tracing::error!(error = %e, "no CA certificates: deploy notifications over https cannot be sent");
                    return None;
                }
            };
            Some(Client::builder(TokioExecutor::new()).build(connector))
        })
        .as_ref()
}

/// Sends `notice` to every target, each in its own task.
pub fn send(targets: &[NotifySpec], notice: Notice) {
    for target in targets {
        let body = match target.format {
            NotifyFormat::Slack => serde_json::json!({ "text": notice.text() }),
            NotifyFormat::Json => serde_json::to_value(&notice).unwrap_or_default(),
        };
        let url = target.url.clone();
        tokio::spawn(async move {
            let Some(client) = client() else {
                return;
            };
            let req = hyper::Request::post(url.as_str())
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .header(hyper::header::USER_AGENT, "berth-deploy")
                .body(Full::new(Bytes::from(body.to_string())));
            let req = match req {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "bad notification request");
                    return;
                }
            };
            // The URL may carry a secret token (Slack's do): only its host is logged.
            let host = req.uri().host().unwrap_or("?").to_owned();
            match tokio::time::timeout(TIMEOUT, client.request(req)).await {
                Ok(Ok(resp)) if resp.status().is_success() => {
                    tracing::debug!(host, "deploy notification sent");
                }
                Ok(Ok(resp)) => {
                    tracing::warn!(
                        host,
                        status = resp.status().as_u16(),
                        "deploy notification refused"
                    );
                }
                Ok(Err(e)) => tracing::warn!(host, error = %e, "deploy notification failed"),
                Err(_) => tracing::warn!(host, "deploy notification timed out"),
            }
        });
    }
}
