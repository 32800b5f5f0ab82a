//! The command line: help, `check`, completions, and how `serve` and `reload` fail.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use berth_testkit::free_addr;

use crate::common::{BIN, server_section, simple};

/// Runs berth to completion with a time limit, so a command that should exit but serves
/// instead fails the test rather than hanging it.
fn run(args: &[&str]) -> Output {
    crate::shared::run_bounded(
        Command::new(BIN)
            .args(args)
            .env_remove("BERTH_CONFIG")
            .env_remove("BERTH_TOKEN")
            .env_remove("BERTH_REMOTE")
            .env(
                "BERTH_CREDENTIALS",
                "/nonexistent/berth-test-credentials.json",
            ),
        Duration::from_secs(10),
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, toml: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, toml).expect("config written");
    path.to_str().expect("utf-8 path").to_owned()
}

fn valid_config(listen: SocketAddr, admin: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        "{}{}",
        server_section(listen, admin, ""),
        simple(&[upstream], "", "")
    )
}

fn port_is_free(addr: SocketAddr) -> bool {
    TcpListener::bind(addr).is_ok()
}

#[test]
fn help_texts_have_examples() {
    let top = run(&["--help"]);
    assert!(top.status.success(), "{top:?}");
    assert!(text(&top.stdout).contains("serve"), "{}", text(&top.stdout));
    for cmd in ["serve", "check", "reload", "login"] {
        let out = run(&[cmd, "--help"]);
        assert!(out.status.success(), "{cmd}: {out:?}");
        let help = text(&out.stdout);
        assert!(help.contains("Examples"), "{cmd} --help:\n{help}");
        assert!(
            help.contains(&format!("berth {cmd}")),
            "{cmd} --help:\n{help}"
        );
    }
}

#[test]
fn check_accepts_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "berth.toml",
        &valid_config(free_addr(), free_addr(), free_addr()),
    );
    let out = run(&["check", "--config", &path]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(text(&out.stdout).contains("ok"), "{}", text(&out.stdout));
}

#[test]
fn check_reports_an_unknown_key_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (free_addr(), free_addr());
    // Line 7 of the file is the misspelt key.
    let toml = format!(
        "[server]\nlisten = [\"{listen}\"]\nadmin_listen = \"{admin}\"\n\n[[route]]\nname = \"app\"\nhostz = [\"*\"]\ngroup = \"app\"\n\n[group.app]\nupstreams = [\"127.0.0.1:9\"]\n"
    );
    assert_eq!(toml.lines().nth(6), Some("hostz = [\"*\"]"));
    let path = write(dir.path(), "bad.toml", &toml);
    let out = run(&["check", "--config", &path]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{path}:7:")), "{err}");
    assert!(err.contains("hostz"), "{err}");
}

#[test]
fn the_policies_example_passes_check() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies.toml");
    let out = run(&["check", "--config", path.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(text(&out.stdout).contains("ok"), "{}", text(&out.stdout));
}

#[test]
fn check_names_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.toml");
    let path = path.to_str().unwrap();
    let out = run(&["check", "--config", path]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains(path), "{}", text(&out.stderr));
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = text(&out.stdout);
        assert!(!script.trim().is_empty(), "{shell}: empty");
        assert!(script.contains("berth"), "{shell}:\n{script}");
    }
}

#[test]
fn serve_with_an_invalid_file_exits_2_without_binding() {
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (free_addr(), free_addr());
    let toml = format!(
        "{}[[route]]\nname = \"app\"\nhosts = [\"*\"]\ngroup = \"nowhere\"\n",
        server_section(listen, admin, "")
    );
    let path = write(dir.path(), "berth.toml", &toml);
    let out = run(&["serve", "--config", &path]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text(&out.stderr).contains("nowhere"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        port_is_free(listen),
        "{listen} is taken after a refused start"
    );
    assert!(
        port_is_free(admin),
        "{admin} is taken after a refused start"
    );
}

#[test]
fn serve_on_a_taken_port_fails_and_names_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap();
    let admin = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "berth.toml",
        &valid_config(listen, admin, free_addr()),
    );
    let out = run(&["serve", "--config", &path]);
    assert!(!out.status.success(), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains(&listen.to_string()), "{err}");
    // It gave up before taking the admin address either.
    assert!(port_is_free(admin), "{admin} is taken after a failed start");
    drop(taken);
}

#[test]
fn reload_without_a_server_says_serve_may_not_be_running() {
    let nobody = free_addr().to_string();
    let out = run(&["reload", "--admin", &nobody]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains(&nobody), "{err}");
    assert!(err.contains("berth serve"), "{err}");
    assert!(err.contains("running"), "{err}");
}
