//! Serving the router on a TCP listener or a Unix socket, telling it where each request came
//! from ([`ClientSource`]).

use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use axum::Router;
use axum::extract::Request;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::middleware;
use axum::serve::IncomingStream;
use tokio::net::{TcpListener, UnixListener};

use crate::ClientSource;

impl Connected<IncomingStream<'_, TcpListener>> for ClientSource {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; networks, the
        // limiter and the audit log all want a.b.c.d.
        ClientSource::Ip(stream.remote_addr().ip().to_canonical())
    }
}

impl Connected<IncomingStream<'_, UnixListener>> for ClientSource {
    fn connect_info(_: IncomingStream<'_, UnixListener>) -> Self {
        ClientSource::Unix
    }
}

/// Moves the connection's source into the extension the router reads.
async fn insert_source(
    ConnectInfo(source): ConnectInfo<ClientSource>,
    mut req: Request,
) -> Request {
    req.extensions_mut().insert(source);
    req
}

fn with_source(router: Router) -> Router {
    router.layer(middleware::map_request(insert_source))
}

/// Tells long responses (a deployment's events) that the listener is shutting down, so they
/// end and the graceful shutdown, which waits for every response in flight, is not held up.
#[derive(Clone)]
pub(crate) struct Stopping(tokio::sync::watch::Receiver<bool>);

impl Stopping {
    /// Resolves once the listener is stopping (or its server is gone); at once if it is.
    pub(crate) async fn wait(&mut self) {
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }
}

/// The router with its [`ClientSource`] and [`Stopping`] layers, and the shutdown future
/// that also signals [`Stopping`].
fn prepare(
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (Router, impl Future<Output = ()> + Send + 'static) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = tx.send(true);
    };
    let router = with_source(router).layer(axum::Extension(Stopping(rx)));
    (router, shutdown)
}

/// Serves `router` on `listener` until `shutdown` completes, then waits for requests in
/// flight to finish. Each request's [`ClientSource`] is the peer's IP address.
pub async fn serve_tcp(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (router, shutdown) = prepare(router, shutdown);
    let service = router.into_make_service_with_connect_info::<ClientSource>();
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves `router` on a Unix socket at `path` until `shutdown` completes, then waits for
/// requests in flight and removes the socket file. Requests count as [`ClientSource::Unix`]:
/// local, inside every restricted network; the file's mode (0600, owner only) is what
/// guards it.
///
/// A stale socket file at `path` (left by a process that died) is replaced; a socket that
/// still answers (another berth running) is an `AddrInUse` error, and a file that is not a
/// socket is an `AlreadyExists` error, never removed.
pub async fn serve_unix(
    path: &Path,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    UnixAdmin::bind(path)?.serve(router, shutdown).await
}

/// The admin socket, bound (and at its path) but not served yet: `berth serve` binds it
/// before the TCP listener answers, so a berth that says it is ready has both.
pub struct UnixAdmin {
    listener: UnixListener,
    path: std::path::PathBuf,
    inode: u64,
}

impl UnixAdmin {
    /// See [`serve_unix`] for what happens to a file already at `path`.
    pub fn bind(path: &Path) -> io::Result<UnixAdmin> {
        let listener = bind_private(path)?;
        let inode = std::fs::metadata(path)?.ino();
        Ok(UnixAdmin {
            listener,
            path: path.to_owned(),
            inode,
        })
    }

    pub async fn serve(
        self,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let (router, shutdown) = prepare(router, shutdown);
        let service = router.into_make_service_with_connect_info::<ClientSource>();
        let served = axum::serve(self.listener, service)
            .with_graceful_shutdown(shutdown)
            .await;
        // Remove the socket only if it is still ours: a newer process may have replaced it.
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
        served
    }
}

/// Binds a Unix socket at `path` that only the owner can connect to.
///
/// A socket is created with the umask's mode, and a chmod afterwards leaves a moment in which
/// anyone may connect. So the socket is bound under a random temporary name beside `path`,
/// made 0600, and only then renamed into place: at `path` it is never open to others.
fn bind_private(path: &Path) -> io::Result<UnixListener> {
    remove_stale(path)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "socket path has no file name")
    })?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(
        ".{:016x}.tmp",
        RandomState::new().hash_one(std::process::id())
    ));
    let temp = match dir {
        Some(d) => d.join(&temp_name),
        None => temp_name.into(),
    };
    let listener = UnixListener::bind(&temp)?;
    let placed = std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&temp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    Ok(listener)
}

fn remove_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use by a running server", path.display()),
        ));
    }
    std::fs::remove_file(path)
}

#[cfg(test)]
mod tests {
    use axum::Extension;
    use axum::routing::get;

    use super::*;

    #[tokio::test]
    async fn a_response_waiting_on_stopping_ends_and_lets_the_listener_stop() {
        let (entered, mut inside) = tokio::sync::mpsc::unbounded_channel::<()>();
        let router = Router::new().route(
            "/wait",
            get(
                move |Extension(mut stopping): Extension<Stopping>| async move {
                    let _ = entered.send(());
                    stopping.wait().await;
                    "stopped"
                },
            ),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_tcp(listener, router, async move {
            let _ = stopped.await;
        }));
        let request = tokio::spawn(async move {
            let client = reqwest::Client::builder().no_proxy().build()?;
            client
                .get(format!("http://{addr}/wait"))
                .send()
                .await?
                .text()
                .await
        });
        inside.recv().await.expect("the request is in the handler");
        let _ = stop.send(());
        assert_eq!(request.await.expect("task").expect("answer"), "stopped");
        server.await.expect("task").expect("serve_tcp");
    }
}
