//! Active health checks: one task per instance that has them, holding only a weak reference
//! so an instance removed from every table stops being checked.

use std::sync::{Arc, Weak};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::BoxError;
use crate::spec::ActiveHealthSpec;
use crate::upstream::Upstream;

pub fn spawn(runtime: &tokio::runtime::Handle, upstream: &Arc<Upstream>, spec: ActiveHealthSpec) {
    let weak: Weak<Upstream> = Arc::downgrade(upstream);
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(spec.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(up) = weak.upgrade() else { return };
            let passed = matches!(
                tokio::time::timeout(spec.timeout, probe(&up, &spec)).await,
                Ok(Ok(status)) if spec.expect.matches(status)
            );
            up.record_check(passed, Instant::now());
        }
    });
}

async fn probe(up: &Upstream, spec: &ActiveHealthSpec) -> Result<http::StatusCode, BoxError> {
    let stream = TcpStream::connect(up.addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::get(spec.path.as_str())
        .header(header::HOST, up.label.as_ref())
        .header(header::USER_AGENT, "berth-health-check")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())?;
    Ok(sender.send_request(req).await?.status())
}
