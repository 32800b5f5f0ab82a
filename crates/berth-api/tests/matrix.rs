//! THE MATRIX: every endpoint × every caller (admin, deployer, viewer, no token, invalid
//! token) × environment allowed/denied × client inside/outside the restricted networks, over
//! real sockets, against one explicit expectation ([`expected`]). Every mutating row also
//! checks the audit log: one `ok` entry for a success, one `denied` entry for a 403, nothing
//! for a 401 or a read.
//!
//! "Environment allowed/denied": for endpoints about one environment the caller holds its
//! role on `staging` and asks about `staging` (allowed) or `production` (denied); for the
//! others the caller holds its role on `*` (allowed) or only on `staging` (denied).
//! "Outside" is the server restricted to 10.0.0.0/8 (the client is 127.0.0.1); "inside" the
//! one restricted to 127.0.0.0/8.

mod support;

use berth_store::{Actor, AuditFilter, Role};
use reqwest::Method;
use serde_json::{Value, json};
use support::{Backend, Harness, call};

/// What an endpoint is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// Not one environment: needs the role on `*`.
    All,
    /// One environment, named in the path.
    Env,
}

/// What an endpoint needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Needs {
    /// Any valid token (one's own identity and tokens).
    Token,
    Role(Role),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Whoami,
    OpenApi,
    Metrics,
    ListUsers,
    AddUser,
    RemoveUser,
    ListOwnTokens,
    ListOthersTokens,
    ListAllTokens,
    CreateOwnToken,
    CreateOthersToken,
    RevokeOwnToken,
    RevokeOthersToken,
    ListAudit,
    VerifyAudit,
    PruneAudit,
    Reload,
    ListApps,
    CreateApp,
    RemoveApp,
    ShowLock,
    Lock,
    Unlock,
}

use Endpoint as E;

const ENDPOINTS: [Endpoint; 23] = [
    E::Whoami,
    E::OpenApi,
    E::Metrics,
    E::ListUsers,
    E::AddUser,
    E::RemoveUser,
    E::ListOwnTokens,
    E::ListOthersTokens,
    E::ListAllTokens,
    E::CreateOwnToken,
    E::CreateOthersToken,
    E::RevokeOwnToken,
    E::RevokeOthersToken,
    E::ListAudit,
    E::VerifyAudit,
    E::PruneAudit,
    E::Reload,
    E::ListApps,
    E::CreateApp,
    E::RemoveApp,
    E::ShowLock,
    E::Lock,
    E::Unlock,
];

struct Spec {
    needs: Needs,
    scope: Scope,
    /// The audit action a mutating endpoint records; `None` for reads.
    audited_as: Option<&'static str>,
    success: u16,
}

/// The issue's table of who may call what.
fn spec(e: Endpoint) -> Spec {
    use Needs::{Role as R, Token};
    use Scope::{All, Env};
    let (needs, scope, audited_as, success) = match e {
        E::Whoami | E::OpenApi | E::Metrics | E::ListOwnTokens => (Token, All, None, 200),
        E::ListUsers => (R(Role::Admin), All, None, 200),
        E::AddUser => (R(Role::Admin), All, Some("user.add"), 201),
        E::RemoveUser => (R(Role::Admin), All, Some("user.remove"), 204),
        E::ListOthersTokens | E::ListAllTokens => (R(Role::Admin), All, None, 200),
        E::CreateOwnToken => (Token, All, Some("token.create"), 201),
        E::CreateOthersToken => (R(Role::Admin), All, Some("token.create"), 201),
        E::RevokeOwnToken => (Token, All, Some("token.revoke"), 204),
        E::RevokeOthersToken => (R(Role::Admin), All, Some("token.revoke"), 204),
        E::ListAudit | E::VerifyAudit => (R(Role::Viewer), All, None, 200),
        E::PruneAudit => (R(Role::Admin), All, Some("audit.prune"), 200),
        E::Reload => (R(Role::Admin), All, Some("config.reload"), 200),
        E::ListApps => (R(Role::Viewer), Env, None, 200),
        E::CreateApp => (R(Role::Deployer), Env, Some("app.create"), 201),
        E::RemoveApp => (R(Role::Admin), Env, Some("app.remove"), 204),
        E::ShowLock => (R(Role::Viewer), Env, None, 200),
        E::Lock => (R(Role::Deployer), Env, Some("deploy.lock"), 201),
        E::Unlock => (R(Role::Deployer), Env, Some("deploy.unlock"), 200),
    };
    Spec {
        needs,
        scope,
        audited_as,
        success,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    Role(Role),
    NoToken,
    InvalidToken,
}

const CALLERS: [Caller; 5] = [
    Caller::Role(Role::Admin),
    Caller::Role(Role::Deployer),
    Caller::Role(Role::Viewer),
    Caller::NoToken,
    Caller::InvalidToken,
];

/// THE EXPECTATION: the status and error code for a caller with `caller`'s role, its
/// environment `allowed` or not, from `inside` the restricted networks or not, calling an
/// endpoint that needs `needs` and answers `success` when it works.
fn expected(
    needs: Needs,
    success: u16,
    caller: Caller,
    allowed: bool,
    inside: bool,
) -> (u16, &'static str) {
    let role = match caller {
        // Nothing is open without a token.
        Caller::NoToken => return (401, "missing_token"),
        Caller::InvalidToken => return (401, "invalid_token"),
        Caller::Role(role) => role,
    };
    match needs {
        // One's own things: any valid token, from anywhere.
        Needs::Token => (success, ""),
        Needs::Role(needed) => {
            if !(role >= needed && allowed) {
                (403, "forbidden")
            } else if needed >= Role::Deployer && !inside {
                // Admin and deployer actions only from the restricted networks; viewing
                // from anywhere.
                (403, "network_denied")
            } else {
                (success, "")
            }
        }
    }
}

/// The users: `ROLE-all` holds ROLE on `*`, `ROLE-staging` holds ROLE on `staging`.
struct People {
    by_role: Vec<(Role, bool, support::Person)>,
    victim: support::Person,
}

impl People {
    async fn new(h: &Harness) -> People {
        let mut by_role = Vec::new();
        for role in Role::ALL {
            for all in [true, false] {
                let env = if all { "*" } else { "staging" };
                let name = format!("{role}-{}", if all { "all" } else { "staging" });
                let p = h.person(&name, &[&format!("{role}@{env}")]).await;
                by_role.push((role, all, p));
            }
        }
        // Someone else, whose tokens the callers try to list, create and revoke.
        let victim = h.person("victim", &["viewer@staging"]).await;
        People { by_role, victim }
    }

    fn get(&self, role: Role, all: bool) -> &support::Person {
        &self
            .by_role
            .iter()
            .find(|(r, a, _)| *r == role && *a == all)
            .expect("person")
            .2
    }
}

/// One request of the matrix: what to send, prepared so that it succeeds when allowed
/// (fresh names to create, existing things to remove).
async fn prepare(
    h: &Harness,
    people: &People,
    e: Endpoint,
    caller: Option<&support::Person>,
    env: &str,
    n: usize,
) -> (Method, String, Option<Value>) {
    let system = Actor::system();
    match e {
        E::Whoami => (Method::GET, "/api/v1/whoami".into(), None),
        E::OpenApi => (Method::GET, "/api/v1/openapi.json".into(), None),
        E::Metrics => (Method::GET, "/api/v1/metrics".into(), None),
        E::ListUsers => (Method::GET, "/api/v1/users".into(), None),
        E::AddUser => (
            Method::POST,
            "/api/v1/users".into(),
            Some(json!({ "name": format!("new{n}"), "grants": ["viewer@staging"] })),
        ),
        E::RemoveUser => {
            let name = format!("gone{n}");
            h.store.add_user(&system, &name, &[]).await.unwrap();
            (Method::DELETE, format!("/api/v1/users/{name}"), None)
        }
        E::ListOwnTokens => (Method::GET, "/api/v1/tokens".into(), None),
        E::ListOthersTokens => (Method::GET, "/api/v1/tokens?user=victim".into(), None),
        E::ListAllTokens => (Method::GET, "/api/v1/tokens?user=*".into(), None),
        E::CreateOwnToken => (
            Method::POST,
            "/api/v1/tokens".into(),
            Some(json!({ "label": format!("own{n}") })),
        ),
        E::CreateOthersToken => (
            Method::POST,
            "/api/v1/tokens".into(),
            Some(json!({ "user": "victim", "label": format!("theirs{n}") })),
        ),
        E::RevokeOwnToken | E::RevokeOthersToken => {
            let owner = match (e, caller) {
                (E::RevokeOwnToken, Some(p)) => &p.name,
                _ => &people.victim.name,
            };
            let (info, _) = h
                .store
                .create_token(&system, owner, "to revoke")
                .await
                .unwrap();
            (Method::DELETE, format!("/api/v1/tokens/{}", info.id), None)
        }
        E::ListAudit => (Method::GET, "/api/v1/audit?limit=5".into(), None),
        E::VerifyAudit => (Method::GET, "/api/v1/audit/verify".into(), None),
        E::PruneAudit => (
            Method::POST,
            "/api/v1/audit/prune".into(),
            Some(json!({ "older_than_days": 365 })),
        ),
        E::Reload => (Method::POST, "/api/v1/reload".into(), None),
        E::ListApps => (Method::GET, format!("/api/v1/envs/{env}/apps"), None),
        E::CreateApp => (
            Method::POST,
            format!("/api/v1/envs/{env}/apps"),
            Some(json!({ "name": format!("app{n}") })),
        ),
        E::RemoveApp => {
            let name = format!("old{n}");
            h.store.create_app(&system, env, &name).await.unwrap();
            (
                Method::DELETE,
                format!("/api/v1/envs/{env}/apps/{name}"),
                None,
            )
        }
        E::ShowLock => (
            Method::GET,
            format!("/api/v1/envs/{env}/apps/shop/lock"),
            None,
        ),
        E::Lock => (
            Method::PUT,
            format!("/api/v1/envs/{env}/apps/fresh{n}/lock"),
            Some(json!({ "reason": "matrix" })),
        ),
        E::Unlock => {
            // Someone else's lock: only with force.
            let name = format!("held{n}");
            let mut tx = h.store.transaction().await.unwrap();
            tx.lock_deploys(&system, env, &name, "held by berth")
                .await
                .unwrap();
            tx.commit().await.unwrap();
            (
                Method::DELETE,
                format!("/api/v1/envs/{env}/apps/{name}/lock?force=true"),
                None,
            )
        }
    }
}

/// The newest audit sequence number.
async fn head(h: &Harness) -> i64 {
    let newest = h
        .store
        .audit_list(&AuditFilter {
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    newest.first().map_or(0, |e| e.seq)
}

async fn entries_after(h: &Harness, seq: i64) -> Vec<berth_store::AuditEntry> {
    let mut all = h
        .store
        .audit_list(&AuditFilter {
            limit: Some(20),
            ..Default::default()
        })
        .await
        .unwrap();
    all.retain(|e| e.seq > seq);
    all.reverse();
    all
}

/// Runs the matrix on `backend`, from the networks in `sides` (true = inside), and returns
/// the number of requests made. Panics listing every row that did not match.
async fn run_matrix(backend: Backend, sides: &[bool]) -> usize {
    // No throttling here: the invalid-token rows all come from 127.0.0.1.
    let h = Harness::new(backend, u32::MAX).await;
    let people = People::new(&h).await;
    let mut failures = Vec::new();
    let mut n = 0;
    for &inside in sides {
        let base = if inside {
            &h.inside.base
        } else {
            &h.outside.base
        };
        for e in ENDPOINTS {
            let s = spec(e);
            for caller in CALLERS {
                for allowed in [true, false] {
                    n += 1;
                    // Who calls, and about which environment.
                    let (person, env) = match (caller, s.scope) {
                        (Caller::Role(r), Scope::All) => (Some(people.get(r, allowed)), "staging"),
                        (Caller::Role(r), Scope::Env) => (
                            Some(people.get(r, false)),
                            if allowed { "staging" } else { "production" },
                        ),
                        (_, _) => (None, if allowed { "staging" } else { "production" }),
                    };
                    let token = match caller {
                        Caller::Role(_) => person.map(|p| p.token.clone()),
                        Caller::NoToken => None,
                        // Well-formed, unknown.
                        Caller::InvalidToken => {
                            Some(format!("berth_{}_{}", "0".repeat(12), "0".repeat(64)))
                        }
                    };
                    let (method, path, body) = prepare(&h, &people, e, person, env, n).await;
                    let before = head(&h).await;
                    let got = call(
                        &h.client,
                        base,
                        method.clone(),
                        &path,
                        token.as_deref(),
                        body.as_ref(),
                    )
                    .await;
                    let want = expected(s.needs, s.success, caller, allowed, inside);

                    let who = match (caller, person) {
                        (Caller::Role(r), Some(p)) => format!("{r} ({})", p.name),
                        (other, _) => format!("{other:?}"),
                    };
                    let row = format!(
                        "{method} {path} as {who}, env {}, {}",
                        if allowed { "allowed" } else { "denied" },
                        if inside { "inside" } else { "outside" },
                    );
                    if (got.status, got.code()) != want {
                        failures.push(format!(
                            "{row}: expected {} {}, got {} {} {}",
                            want.0,
                            want.1,
                            got.status,
                            got.code(),
                            got.body
                        ));
                        continue;
                    }
                    // The audit log: what this request added.
                    let added = entries_after(&h, before).await;
                    let seen: Vec<(String, String, String)> = added
                        .iter()
                        .map(|e| (e.actor.clone(), e.action.clone(), e.outcome.clone()))
                        .collect();
                    let audit_want = match (s.audited_as, person, want.0) {
                        (Some(action), Some(p), 403) => {
                            vec![(p.name.clone(), action.to_owned(), "denied".to_owned())]
                        }
                        (Some(action), Some(p), status) if status == s.success => {
                            vec![(p.name.clone(), action.to_owned(), "ok".to_owned())]
                        }
                        _ => vec![],
                    };
                    if seen != audit_want {
                        failures.push(format!(
                            "{row}: audit expected {audit_want:?}, got {seen:?}"
                        ));
                    }
                    if let (Some(entry), Some(_)) = (added.first(), person) {
                        let source = &entry.source;
                        if source != "127.0.0.1" {
                            failures.push(format!("{row}: audit source {source}"));
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} matrix rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(h.store.audit_verify(support::KEY).await.unwrap().is_valid());
    h.stop().await;
    n
}

#[test]
fn the_expectation_reads_as_the_issue_says() {
    let admin = Caller::Role(Role::Admin);
    let viewer = Caller::Role(Role::Viewer);
    let deployer = Caller::Role(Role::Deployer);
    let users = Needs::Role(Role::Admin);
    assert_eq!(expected(users, 200, admin, true, true), (200, ""));
    assert_eq!(expected(users, 200, admin, false, true), (403, "forbidden"));
    assert_eq!(
        expected(users, 200, admin, true, false),
        (403, "network_denied")
    );
    assert_eq!(
        expected(users, 200, viewer, true, false),
        (403, "forbidden")
    );
    let read = Needs::Role(Role::Viewer);
    assert_eq!(expected(read, 200, viewer, true, false), (200, ""));
    assert_eq!(expected(read, 200, admin, true, false), (200, ""));
    let deploy = Needs::Role(Role::Deployer);
    assert_eq!(expected(deploy, 201, deployer, true, true), (201, ""));
    assert_eq!(
        expected(deploy, 201, deployer, false, true),
        (403, "forbidden")
    );
    assert_eq!(expected(Needs::Token, 201, viewer, false, false), (201, ""));
    for needs in [Needs::Token, users, read, deploy] {
        assert_eq!(expected(needs, 200, Caller::NoToken, true, true).0, 401);
        assert_eq!(
            expected(needs, 200, Caller::InvalidToken, true, true).0,
            401
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_sqlite() {
    let n = run_matrix(Backend::Sqlite, &[true, false]).await;
    assert_eq!(n, ENDPOINTS.len() * CALLERS.len() * 2 * 2);
}

/// The same matrix on PostgreSQL, from inside the networks only (the network rule is the
/// API's, not the store's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_postgres_smoke() {
    let n = run_matrix(Backend::Postgres, &[true]).await;
    assert_eq!(n, ENDPOINTS.len() * CALLERS.len() * 2);
}
