//! Accept loop, per-connection serving and the drain on SIGTERM/SIGINT.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::App;
use crate::routes;

/// How long in-flight requests get to finish after a stop signal before the
/// process exits anyway; a deployer waiting on us should not wait forever.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

pub async fn serve(listener: TcpListener, app: Arc<App>) -> io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop = stop_signal();
    tokio::pin!(stop);

    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning, keep serving.
                    eprintln!("berth-demo: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            result = &mut stop => {
                result?;
                break;
            }
        };
        // Benchmarks measure latency of small responses; Nagle would add delays.
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| routes::handle(app.clone(), req));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop_rx.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            // stop_rx drops here, which is what the drain below waits for.
        });
    }

    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(DRAIN_LIMIT, stop_tx.closed()).await;
    Ok(())
}

async fn stop_signal() -> io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
