//! Valid app specs and the `AppSpec` they produce.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_config::app::{
    APP_SPEC_FILE, AppSpec, BuildSpec, DEFAULT_BUILD_TIMEOUT, DEFAULT_DEPLOY_TIMEOUT,
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_HEALTH_PATH, DEFAULT_KEEP_RELEASES, DEFAULT_STOP_TIMEOUT,
    HealthSpec, ProcessSpec, ResourceLimits, RestartSpec, StopSignal, load, parse,
};

fn parse_ok(src: &str) -> AppSpec {
    parse(src, Path::new("berth.toml")).unwrap_or_else(|err| panic!("{err}"))
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const FULL: &str = r#"
name = "shop"
hosts = ["Shop.Example.com", "*.shop.example.com", "localhost"]

[build]
command = "npm ci && npm run build"
timeout = "15m"

[release]
keep = 3

[deploy]
timeout = "5m"
drain_timeout = "0s"

[env]
NODE_ENV = "production"
LOG_LEVEL = "info"

[processes.api]
command = "node server.js"
instances = 4
workdir = "backend"
http = true
stop_signal = "sigint"
stop_timeout = "1m"
env = { LOG_LEVEL = "debug", _PRIVATE = "x" }

[processes.api.health]
path = "/ready?deep=1"
interval = "5s"
timeout = "1s"
start_timeout = "2m"
healthy_threshold = 2
unhealthy_threshold = 5

[processes.api.limits]
memory = "512MiB"
cpu = 1.5
open_files = 4096
processes = 64

[processes.api.restart]
backoff_base = "500ms"
backoff_cap = "30s"
crash_loop_exits = 10
crash_loop_window = "2m"

[processes.web]
command = "./static-server"
http = false
instances = 0

[processes.mailer]
command = "node mailer.js"
stop_signal = "QUIT"
health = false
limits = { cpu = 2, memory = 1073741824 }
"#;

fn full_spec() -> AppSpec {
    let api = ProcessSpec {
        command: "node server.js".into(),
        instances: 4,
        workdir: "backend".into(),
        env: env(&[("LOG_LEVEL", "debug"), ("_PRIVATE", "x")]),
        http: true,
        health: Some(HealthSpec {
            path: "/ready?deep=1".into(),
            interval: secs(5),
            timeout: secs(1),
            start_timeout: secs(120),
            healthy_threshold: 2,
            unhealthy_threshold: 5,
        }),
        stop_signal: StopSignal::Int,
        stop_timeout: secs(60),
        limits: ResourceLimits {
            memory_bytes: Some(512 << 20),
            cpu: Some(1.5),
            open_files: Some(4096),
            processes: Some(64),
        },
        restart: RestartSpec {
            backoff_base: Duration::from_millis(500),
            backoff_cap: secs(30),
            crash_loop_exits: 10,
            crash_loop_window: secs(120),
        },
    };
    let web = ProcessSpec {
        command: "./static-server".into(),
        instances: 0,
        workdir: ".".into(),
        env: BTreeMap::new(),
        http: false,
        health: None,
        stop_signal: StopSignal::Term,
        stop_timeout: DEFAULT_STOP_TIMEOUT,
        limits: ResourceLimits::default(),
        restart: RestartSpec::default(),
    };
    let mailer = ProcessSpec {
        command: "node mailer.js".into(),
        instances: 1,
        workdir: ".".into(),
        env: BTreeMap::new(),
        http: false,
        health: None,
        stop_signal: StopSignal::Quit,
        stop_timeout: DEFAULT_STOP_TIMEOUT,
        limits: ResourceLimits {
            memory_bytes: Some(1 << 30),
            cpu: Some(2.0),
            open_files: None,
            processes: None,
        },
        restart: RestartSpec::default(),
    };
    AppSpec {
        name: "shop".into(),
        hosts: vec![
            "shop.example.com".into(),
            "*.shop.example.com".into(),
            "localhost".into(),
        ],
        build: Some(BuildSpec {
            command: "npm ci && npm run build".into(),
            timeout: secs(15 * 60),
        }),
        keep_releases: 3,
        deploy_timeout: secs(300),
        drain_timeout: Duration::ZERO,
        rollout: Default::default(),
        edge: Default::default(),
        env: env(&[("NODE_ENV", "production"), ("LOG_LEVEL", "info")]),
        processes: [
            ("api".to_owned(), api),
            ("web".to_owned(), web),
            ("mailer".to_owned(), mailer),
        ]
        .into_iter()
        .collect(),
        environments: BTreeMap::new(),
    }
}

#[test]
fn full_spec_gives_every_value() {
    assert_eq!(parse_ok(FULL), full_spec());
}

#[test]
fn minimal_spec_gets_the_defaults() {
    let spec = parse_ok("name = \"a\"\n[processes.web]\ncommand = \"./server\"\n");
    let web = ProcessSpec {
        command: "./server".into(),
        instances: 1,
        workdir: ".".into(),
        env: BTreeMap::new(),
        http: true,
        health: Some(HealthSpec {
            path: "/health".into(),
            interval: secs(2),
            timeout: secs(2),
            start_timeout: secs(60),
            healthy_threshold: 1,
            unhealthy_threshold: 3,
        }),
        stop_signal: StopSignal::Term,
        stop_timeout: secs(30),
        limits: ResourceLimits {
            memory_bytes: None,
            cpu: None,
            open_files: None,
            processes: None,
        },
        restart: RestartSpec {
            backoff_base: secs(1),
            backoff_cap: secs(60),
            crash_loop_exits: 5,
            crash_loop_window: secs(60),
        },
    };
    let expected = AppSpec {
        name: "a".into(),
        hosts: vec![],
        build: None,
        keep_releases: 5,
        deploy_timeout: secs(120),
        drain_timeout: secs(30),
        rollout: Default::default(),
        edge: Default::default(),
        env: BTreeMap::new(),
        processes: [("web".to_owned(), web)].into_iter().collect(),
        environments: BTreeMap::new(),
    };
    assert_eq!(spec, expected);
    // The named constants agree with the literal values above.
    assert_eq!(DEFAULT_KEEP_RELEASES, 5);
    assert_eq!(DEFAULT_BUILD_TIMEOUT, secs(600));
    assert_eq!(DEFAULT_DEPLOY_TIMEOUT, secs(120));
    assert_eq!(DEFAULT_DRAIN_TIMEOUT, secs(30));
    assert_eq!(DEFAULT_HEALTH_PATH, "/health");
    assert_eq!(
        HealthSpec::default(),
        expected.processes["web"].health.clone().unwrap()
    );
}

#[test]
fn web_serves_http_with_health_and_others_do_not() {
    let spec = parse_ok(
        "name = \"a\"\nhosts = [\"a.example.com\"]\n\
         [processes.web]\ncommand = \"w\"\n[processes.worker]\ncommand = \"q\"\n",
    );
    let web = &spec.processes["web"];
    assert!(web.http);
    assert_eq!(web.health, Some(HealthSpec::default()));
    let worker = &spec.processes["worker"];
    assert!(!worker.http);
    assert_eq!(worker.health, None);
    let (name, process) = spec.http_process().expect("an http process");
    assert_eq!(name, "web");
    assert_eq!(process, web);
}

#[test]
fn another_process_can_serve_http() {
    let spec = parse_ok(
        "name = \"a\"\nhosts = [\"a.example.com\"]\n\
         [processes.web]\ncommand = \"w\"\nhttp = false\n\
         [processes.api]\ncommand = \"a\"\nhttp = true\n",
    );
    assert_eq!(spec.http_process().map(|(name, _)| name), Some("api"));
    assert_eq!(spec.processes["api"].health, Some(HealthSpec::default()));
    assert_eq!(spec.processes["web"].health, None);
}

#[test]
fn no_http_process_and_no_hosts_is_fine() {
    let spec = parse_ok("name = \"cron\"\n[processes.worker]\ncommand = \"python3 jobs.py\"\n");
    assert_eq!(spec.http_process(), None);
    assert!(spec.hosts.is_empty());
}

#[test]
fn an_http_process_without_hosts_is_allowed() {
    let spec = parse_ok("name = \"a\"\n[processes.web]\ncommand = \"w\"\n");
    assert!(spec.hosts.is_empty());
    assert_eq!(spec.http_process().map(|(name, _)| name), Some("web"));
}

#[test]
fn health_can_be_turned_off_or_on_with_defaults() {
    let off = parse_ok("name = \"a\"\n[processes.web]\ncommand = \"w\"\nhealth = false\n");
    assert_eq!(off.processes["web"].health, None);
    assert!(off.processes["web"].http);
    let on = parse_ok("name = \"a\"\n[processes.web]\ncommand = \"w\"\nhealth = true\n");
    assert_eq!(on.processes["web"].health, Some(HealthSpec::default()));
    // Off on a process without HTTP says what is already so.
    let worker = parse_ok("name = \"a\"\n[processes.q]\ncommand = \"w\"\nhealth = false\n");
    assert_eq!(worker.processes["q"].health, None);
}

#[test]
fn a_partial_health_table_keeps_the_other_defaults() {
    let spec = parse_ok("name = \"a\"\n[processes.web]\ncommand = \"w\"\nhealth.path = \"/up\"\n");
    assert_eq!(
        spec.processes["web"].health,
        Some(HealthSpec {
            path: "/up".into(),
            ..HealthSpec::default()
        })
    );
}

#[test]
fn stop_signals_in_any_spelling() {
    for (text, signal) in [
        ("TERM", StopSignal::Term),
        ("SIGTERM", StopSignal::Term),
        ("term", StopSignal::Term),
        ("SigInt", StopSignal::Int),
        ("quit", StopSignal::Quit),
        ("SIGHUP", StopSignal::Hup),
        ("usr1", StopSignal::Usr1),
        ("SIGUSR2", StopSignal::Usr2),
        ("Winch", StopSignal::Winch),
    ] {
        let spec = parse_ok(&format!(
            "name = \"a\"\n[processes.web]\ncommand = \"w\"\nstop_signal = \"{text}\"\n"
        ));
        assert_eq!(spec.processes["web"].stop_signal, signal, "{text}");
    }
    let names: Vec<&str> = StopSignal::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        names,
        ["TERM", "INT", "QUIT", "HUP", "USR1", "USR2", "WINCH"]
    );
    assert_eq!(StopSignal::Usr1.to_string(), "USR1");
    assert_eq!(StopSignal::from_name("SIGKILL"), None);
}

#[test]
fn process_environment_is_laid_over_the_app_environment() {
    let spec = parse_ok(
        "name = \"a\"\n[env]\nA = \"app\"\nB = \"app\"\n\
         [processes.web]\ncommand = \"w\"\nenv.B = \"web\"\nenv.C = \"web\"\n\
         [processes.q]\ncommand = \"q\"\n",
    );
    assert_eq!(
        spec.processes["web"].environment(&spec),
        env(&[("A", "app"), ("B", "web"), ("C", "web")])
    );
    assert_eq!(
        spec.processes["q"].environment(&spec),
        env(&[("A", "app"), ("B", "app")])
    );
}

#[test]
fn json_round_trip() {
    let spec = full_spec();
    let json = serde_json::to_string(&spec).expect("serialise");
    let back: AppSpec = serde_json::from_str(&json).expect("deserialise");
    assert_eq!(back, spec);
    // Signals are stored by name, so the JSON stays readable.
    let value: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(value["processes"]["api"]["stop_signal"], "INT");
    assert_eq!(value["processes"]["mailer"]["stop_signal"], "QUIT");
    // The stored form docs/app-spec.md describes: durations as secs and nanos, sizes in bytes,
    // an unset limit as null.
    assert_eq!(
        value["deploy_timeout"],
        serde_json::json!({"secs": 300, "nanos": 0})
    );
    assert_eq!(
        value["processes"]["api"]["restart"]["backoff_base"],
        serde_json::json!({"secs": 0, "nanos": 500_000_000})
    );
    assert_eq!(
        value["processes"]["api"]["limits"]["memory_bytes"],
        512u64 << 20
    );
    assert!(value["processes"]["mailer"]["limits"]["open_files"].is_null());
}

#[test]
fn hosts_are_lower_cased_and_wildcards_kept() {
    let spec = parse_ok(
        "name = \"a\"\nhosts = [\"A.Example.COM\", \"*.Apps.Example.com\", \"[::1]\", \"127.0.0.1\"]\n\
         [processes.web]\ncommand = \"w\"\n",
    );
    assert_eq!(
        spec.hosts,
        ["a.example.com", "*.apps.example.com", "[::1]", "127.0.0.1"]
    );
}

#[test]
fn limits_accept_integers_and_sizes() {
    let spec = parse_ok(
        "name = \"a\"\n[processes.web]\ncommand = \"w\"\n\
         limits = { memory = \"1 GB\", cpu = 0.25, open_files = 16, processes = 1 }\n",
    );
    assert_eq!(
        spec.processes["web"].limits,
        ResourceLimits {
            memory_bytes: Some(1_000_000_000),
            cpu: Some(0.25),
            open_files: Some(16),
            processes: Some(1),
        }
    );
}

#[test]
fn edge_values_are_accepted() {
    let long = format!("a{}", "b".repeat(62));
    let spec = parse_ok(&format!(
        "name = \"{long}\"\n[processes.web]\ncommand = \"w\"\ninstances = 64\n\
         workdir = \"./app/src\"\n[processes.web.health]\ntimeout = \"2s\"\ninterval = \"2s\"\n\
         [processes.web.restart]\nbackoff_base = \"5s\"\nbackoff_cap = \"5s\"\n"
    ));
    assert_eq!(spec.name, long);
    let web = &spec.processes["web"];
    assert_eq!(web.instances, 64);
    assert_eq!(web.workdir, "./app/src");
    assert_eq!(web.restart.backoff_cap, secs(5));
}

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/python-app/berth.toml")
}

#[test]
fn python_example_parses() {
    let spec = load(&example_path()).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(spec.name, "hello-py");
    assert_eq!(spec.hosts, ["hello-py.localhost"]);
    assert_eq!(
        spec.build.as_ref().map(|b| b.command.as_str()),
        Some("python3 -m compileall -q .")
    );
    let (name, web) = spec.http_process().expect("web serves HTTP");
    assert_eq!(name, "web");
    assert_eq!(
        web.command,
        "gunicorn --bind 127.0.0.1:$PORT --workers 2 --graceful-timeout 10 app:app"
    );
    assert_eq!(
        web.health.as_ref().map(|h| h.path.as_str()),
        Some("/health")
    );
    let worker = &spec.processes["worker"];
    assert_eq!(worker.command, "python3 worker.py");
    assert!(!worker.http);
    assert_eq!(worker.health, None);
    assert_eq!(spec.processes.len(), 2);
}

#[test]
fn load_reads_a_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(APP_SPEC_FILE);
    std::fs::write(&path, "name = \"a\"\n[processes.web]\ncommand = \"w\"\n").expect("write");
    assert_eq!(load(&path).map(|spec| spec.name), Ok("a".to_owned()));
}

#[test]
fn load_of_a_missing_file_names_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(APP_SPEC_FILE);
    let err = load(&path).expect_err("no file");
    assert_eq!(err.diagnostics.len(), 1);
    let d = &err.diagnostics[0];
    assert_eq!((d.file.as_path(), d.line, d.column), (path.as_path(), 0, 0));
    assert!(d.message.starts_with("cannot read app spec: "), "{d}");
    assert!(
        d.hint.as_deref().is_some_and(|h| h.contains("berth.toml")),
        "{d}"
    );
}

/// The ```toml blocks of `docs/app-spec.md` that hold a whole spec (they have a `name`).
fn doc_specs() -> Vec<String> {
    let doc = include_str!("../../../docs/app-spec.md");
    let mut specs = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match (&mut current, line) {
            (None, "```toml") => current = Some(String::new()),
            (Some(block), "```") => {
                if block.starts_with("name = ") {
                    specs.push(block.clone());
                }
                current = None;
            }
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    specs
}

#[test]
fn the_documented_examples_are_valid() {
    let specs = doc_specs();
    assert_eq!(
        specs.len(),
        3,
        "the short, the environments and the complete example"
    );
    let short = parse_ok(&specs[0]);
    assert_eq!(short.name, "hello-py");
    let environments = parse_ok(&specs[1]);
    let staging = environments.for_environment("staging");
    assert_eq!(staging.hosts, ["staging.shop.example.com"]);
    assert_eq!(staging.processes["web"].instances, 1);
    assert_eq!(
        staging.processes["web"].limits.memory_bytes,
        Some(256 << 20)
    );
    assert_eq!(staging.processes["web"].limits.cpu, Some(1.0));
    assert_eq!(staging.deploy_timeout, secs(300));
    assert_eq!(
        environments.for_environment("production").processes["web"].instances,
        4
    );
    let complete = parse_ok(&specs[2]);
    assert_eq!(complete.name, "shop");
    let web = &complete.processes["web"];
    assert!(web.http);
    assert_eq!(web.workdir, "backend");
    assert_eq!(web.stop_signal, StopSignal::Int);
    assert_eq!(web.health.as_ref().map(|h| h.healthy_threshold), Some(2));
    assert_eq!(web.limits.memory_bytes, Some(512 << 20));
    assert_eq!(web.restart.crash_loop_exits, 10);
    let mailer = &complete.processes["mailer"];
    assert!(!mailer.http);
    assert_eq!(mailer.limits.cpu, Some(0.25));
    assert_eq!(
        web.environment(&complete),
        env(&[("NODE_ENV", "production"), ("LOG_LEVEL", "debug")])
    );
}

const WITH_ENVIRONMENTS: &str = r#"
name = "shop"
hosts = ["shop.example.com"]

[env]
LOG_LEVEL = "info"
REGION = "eu"

[processes.web]
command = "./server"
instances = 4
limits = { memory = "512MiB", cpu = 1 }

[processes.worker]
command = "./worker"

[environments.staging]
hosts = ["staging.shop.example.com"]
env = { LOG_LEVEL = "debug" }
deploy = { timeout = "30s" }

[environments.staging.processes.web]
instances = 1
limits = { memory = "256MiB" }
env = { WEB_ONLY = "1" }

[environments.production.processes.worker]
instances = 3
"#;

#[test]
fn environments_are_laid_over_the_base() {
    let spec = parse_ok(WITH_ENVIRONMENTS);
    assert_eq!(spec.environments.len(), 2);

    let staging = spec.for_environment("staging");
    assert!(staging.environments.is_empty());
    assert_eq!(staging.hosts, ["staging.shop.example.com"]);
    assert_eq!(
        staging.env,
        env(&[("LOG_LEVEL", "debug"), ("REGION", "eu")])
    );
    assert_eq!(staging.deploy_timeout, secs(30));
    assert_eq!(staging.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
    let web = &staging.processes["web"];
    assert_eq!(web.instances, 1);
    // One limit replaced, the other kept.
    assert_eq!(web.limits.memory_bytes, Some(256 << 20));
    assert_eq!(web.limits.cpu, Some(1.0));
    assert_eq!(web.env, env(&[("WEB_ONLY", "1")]));
    assert_eq!(staging.processes["worker"].instances, 1);

    let production = spec.for_environment("production");
    assert_eq!(production.hosts, ["shop.example.com"]);
    assert_eq!(production.processes["web"].instances, 4);
    assert_eq!(production.processes["worker"].instances, 3);
    assert_eq!(production.env["LOG_LEVEL"], "info");

    // An environment the spec does not name runs the base.
    let mut base = spec.clone();
    base.environments.clear();
    assert_eq!(spec.for_environment("dev"), base);

    // The stored form keeps the overrides, and a spec stored before environments existed
    // (no `environments` key) still reads.
    let json = serde_json::to_value(&spec).unwrap();
    let back: AppSpec = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, spec);
    let mut old = json;
    old.as_object_mut().unwrap().remove("environments");
    let old: AppSpec = serde_json::from_value(old).unwrap();
    assert!(old.environments.is_empty());
}
