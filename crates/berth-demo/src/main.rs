//! berth-demo: the small HTTP app bundled with berth for the quickstart, tests
//! and benchmarks. Its `/_demo/` switches make it fail, slow down or crash on
//! demand so deploy and proxy behaviour can be shown and tested.

mod app;
mod body;
mod query;
mod respond;
mod routes;
mod server;
mod settings;
mod streams;
mod switches;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use settings::{Invocation, Settings, USAGE};

fn main() -> ExitCode {
    let settings = match Settings::parse(std::env::args().skip(1), |k| std::env::var(k).ok()) {
        Ok(Invocation::Run(settings)) => settings,
        Ok(Invocation::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("berth-demo: {msg}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    let runtime = if settings.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(settings.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth-demo: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };

    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-demo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("bind {}: {e}", settings.listen)))?;
    let local = listener.local_addr()?;
    {
        // This line is the readiness signal for whoever spawned us, so make
        // sure it has left the process before we accept anything.
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "berth-demo listening on {local} release {}",
            settings.release
        )?;
        out.flush()?;
    }
    let app = Arc::new(app::App::new(&settings));
    server::serve(listener, app).await
}
