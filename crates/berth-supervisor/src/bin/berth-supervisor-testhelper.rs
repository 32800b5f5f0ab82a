//! Test helper, two modes.
//!
//! Without arguments it stands in for berth in the PDEATHSIG test: spawns `sleep 300` as a
//! supervised instance, prints its pid, and waits to be `kill -9`ed; the test then checks the
//! kernel killed the `sleep` too. A separate process is needed because the test cannot
//! SIGKILL itself.
//!
//! `serve` stands in for a web app: listens on `127.0.0.1:$PORT` and answers `GET /health`
//! with 200, or 503 while the file named by `$HEALTH_FAIL_FILE` exists (so a test can make a
//! healthy app sick and well again); other paths get 404. It prints `listening <port>` once
//! bound. It keeps the default SIGTERM action, so a graceful stop ends it at once.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::ExitCode;

use berth_supervisor::{CommandSpec, Instance};

fn main() -> ExitCode {
    match std::env::args_os().nth(1).as_ref().and_then(|a| a.to_str()) {
        None => fake_berth(),
        Some("serve") => serve(),
        Some(other) => fail(&format!("unknown mode {other}")),
    }
    ExitCode::SUCCESS
}

fn fail(msg: &str) -> ! {
    eprintln!("{msg}");
    std::process::exit(1);
}

fn fake_berth() {
    // current_thread: the spawning thread is the main thread, which lives until the SIGKILL.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fail(&format!("runtime: {e}")),
    };
    runtime.block_on(async {
        let spec = CommandSpec::new("sleep", "/").arg("300");
        let mut instance = match Instance::spawn(&spec) {
            Ok(i) => i,
            Err(e) => fail(&e.to_string()),
        };
        println!("{}", instance.pid());
        let _ = std::io::stdout().flush();
        let _ = instance.wait().await;
    });
}

fn serve() {
    let Some(port) = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
    else {
        fail("serve: PORT is not set to a port number");
    };
    let listener = match TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) => fail(&format!("serve: bind 127.0.0.1:{port}: {e}")),
    };
    println!("listening {port}");
    let _ = std::io::stdout().flush();
    let fail_file = std::env::var_os("HEALTH_FAIL_FILE");
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let Ok(reader) = conn.try_clone() else {
            continue;
        };
        let mut reader = BufReader::new(reader);
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).is_err() {
            continue;
        }
        // Read the headers too: closing with unread input would reset the connection,
        // possibly before the client has read the answer.
        let mut header = String::new();
        while reader.read_line(&mut header).is_ok_and(|n| n > 0) && header.trim_end() != "" {
            header.clear();
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or("");
        let status = if path != "/health" {
            "404 Not Found"
        } else if fail_file
            .as_ref()
            .is_some_and(|f| std::path::Path::new(f).exists())
        {
            "503 Service Unavailable"
        } else {
            "200 OK"
        };
        let _ = write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }
}
