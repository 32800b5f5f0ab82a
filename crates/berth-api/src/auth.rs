//! Authentication (bearer token → [`Caller`], with throttling of failures) as a middleware on
//! every route, and authorisation plus auditing of the attempt in [`Ctx`], which handlers
//! take as an argument.
//!
//! The order a request goes through: source known (else 500) → throttled? (429) → token
//! present (401 `missing_token`) and valid (401 `invalid_token`) → route (404/405) → body
//! parsed (400) → role and network ([`crate::policy`], 403) → the action (its own 4xx).

use std::future::Future;
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_store::{Actor, NewAuditEntry, Store, TokenInfo, User};
use http::request::Parts;
use http::{HeaderMap, header};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::metrics::AuthFailure;
use crate::policy::{Denial, Need, decide, effective_role};
use crate::throttle::{SourceKey, Verdict};
use crate::{ClientSource, Shared};

/// The authenticated caller of a request.
#[derive(Debug)]
pub(crate) struct Caller {
    pub user: User,
    pub token: TokenInfo,
    pub source: ClientSource,
}

impl Caller {
    /// The caller as the audit log records them, with the role that applies to `need`
    /// (`none` when they hold no role there).
    fn actor(&self, need: &Need) -> Actor {
        Actor::new(
            self.user.name.clone(),
            effective_role(&self.user, need).map_or("none", |r| r.as_str()),
            self.source.audit_name(),
        )
    }
}

/// The middleware: lets a request through only with a valid token from an address that is
/// not throttled, and hands the [`Caller`] to the handler.
pub(crate) async fn authenticate(
    State(shared): State<Shared>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(source) = req.extensions().get::<ClientSource>().copied() else {
        // Fail closed: a request whose origin is unknown must not be taken for local.
        return ApiError::Internal(
            "request without a ClientSource extension: serve the router with serve_tcp or \
             serve_unix"
                .into(),
        )
        .into_response();
    };
    // The Unix socket is not throttled: only berth's own user can open it (mode 0600), and
    // locking that operator out would protect nothing.
    let key = match source {
        ClientSource::Ip(ip) => Some(SourceKey::of(ip)),
        ClientSource::Unix => None,
    };
    let metrics = &shared.api.metrics;
    if let Some(key) = key {
        // Checked before the token is even looked at: a throttled address costs no
        // database query, and a valid token does not get through either (otherwise the
        // limit would only slow down guessing, not stop it).
        let verdict = lock_limiter(&shared).check(key, Instant::now());
        if let Verdict::Throttled { retry_after } = verdict {
            metrics.auth_failure(AuthFailure::Throttled);
            return ApiError::Throttled { retry_after }.into_response();
        }
    }
    let failed = |why: AuthFailure, error: ApiError| {
        metrics.auth_failure(why);
        if let Some(key) = key {
            lock_limiter(&shared).record_failure(key, Instant::now());
        }
        error.into_response()
    };
    let token = match bearer_token(req.headers()) {
        Ok(Some(token)) => token,
        Ok(None) => return failed(AuthFailure::Missing, ApiError::MissingToken),
        Err(()) => return failed(AuthFailure::Invalid, ApiError::InvalidToken),
    };
    match shared.api.store.authenticate(token).await {
        Ok(Some((user, token))) => {
            req.extensions_mut().insert(Arc::new(Caller {
                user,
                token,
                source,
            }));
            next.run(req).await
        }
        Ok(None) => failed(AuthFailure::Invalid, ApiError::InvalidToken),
        // The database failing is not the client's failure: no count, no throttling.
        Err(e) => ApiError::from(e).into_response(),
    }
}

fn lock_limiter(shared: &Shared) -> std::sync::MutexGuard<'_, crate::throttle::Limiter> {
    // A panic while holding the lock cannot leave the counters inconsistent in a way that
    // matters (worst case one failure more or less): keep using them.
    shared
        .limiter
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// The token of `Authorization: Bearer <token>`: `Ok(None)` when there is no such header,
/// `Err` when there is one that is not a single bearer token.
fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, ()> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(());
    }
    let value = value.to_str().map_err(|_| ())?;
    let (scheme, token) = value.split_once(' ').ok_or(())?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(());
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(());
    }
    Ok(Some(token))
}

/// For mutating routes: a request with a valid token that is refused for its input (400,
/// 413: wrong types, unknown fields, bad names, huge bodies) never reaches the handler's
/// [`Ctx::mutate`], so the attempt is recorded here, with outcome `rejected: CODE`.
pub(crate) async fn audit_rejected_input(
    State((shared, action)): State<(Shared, &'static str)>,
    mut req: Request,
    next: Next,
) -> Response {
    let caller = req.extensions().get::<Arc<Caller>>().cloned();
    // Inside the nested router the path has the API prefix stripped; the record names the
    // path the client sent.
    let target = format!("{}{}", crate::routes::PREFIX, req.uri().path());
    let audited = Audited::default();
    req.extensions_mut().insert(audited.clone());
    let response = next.run(req).await;
    let status = response.status();
    let rejected =
        status == http::StatusCode::BAD_REQUEST || status == http::StatusCode::PAYLOAD_TOO_LARGE;
    if let (true, false, Some(caller)) = (rejected, audited.get(), caller) {
        // The route's own need is the handler's to know; the strongest role held anywhere
        // says who this was.
        let actor = caller.actor(&Need::Token);
        let code = if status == http::StatusCode::BAD_REQUEST {
            "bad_request"
        } else {
            "too_large"
        };
        // The rejected body is not recorded: it may hold anything, secrets included.
        let entry = NewAuditEntry::new(&actor, action, target, json!({}))
            .with_outcome(format!("rejected: {code}"));
        if let Err(err) = shared.api.store.audit_record(entry).await {
            tracing::error!(error = %err, action, "could not record a rejected admin API attempt in the audit log");
        }
    }
    response
}

/// Set once the handler recorded the attempt itself, so it is never recorded twice.
#[derive(Clone, Default)]
pub(crate) struct Audited(Arc<std::sync::atomic::AtomicBool>);

impl Audited {
    fn set(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn get(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What a handler works with: the shared state and the authenticated caller.
pub(crate) struct Ctx {
    pub shared: Shared,
    pub caller: Arc<Caller>,
    audited: Option<Audited>,
}

impl FromRequestParts<Shared> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let caller = parts
            .extensions
            .get::<Arc<Caller>>()
            .cloned()
            .ok_or_else(|| {
                ApiError::Internal("handler reached without the authentication layer".into())
            })?;
        Ok(Ctx {
            shared: state.clone(),
            caller,
            audited: parts.extensions.get::<Audited>().cloned(),
        })
    }
}

/// A mutating action about to be attempted, as the audit log will name it.
pub(crate) struct Attempt {
    /// Dotted verb: `user.add`, `token.revoke`, `app.create`, …
    pub action: &'static str,
    pub target: String,
    /// Never secret values (the store redacts secret-looking keys as a safety net).
    pub params: Value,
}

impl Attempt {
    pub(crate) fn new(action: &'static str, target: impl Into<String>, params: Value) -> Self {
        Attempt {
            action,
            target: target.into(),
            params,
        }
    }
}

impl Ctx {
    pub(crate) fn store(&self) -> &Store {
        &self.shared.api.store
    }

    pub(crate) fn user(&self) -> &User {
        &self.caller.user
    }

    /// Checks that the caller may do something that needs `need`; for reads (nothing is
    /// recorded). Mutating handlers use [`Ctx::mutate`].
    pub(crate) fn allow(&self, need: &Need) -> Result<(), ApiError> {
        let inside = self.shared.api.policy.inside(self.caller.source);
        decide(&self.caller.user, need, inside).map_err(|denial| match denial {
            Denial::Forbidden => ApiError::Forbidden {
                needed: need.to_string(),
            },
            Denial::NetworkDenied => ApiError::NetworkDenied {
                needed: need.to_string(),
                client: self.caller.source.audit_name(),
            },
        })
    }

    /// Runs a mutating action that needs `need`: checks it, then runs `action` with the
    /// actor to pass to the store (which audits the change in the change's own
    /// transaction). When the action is refused or fails, the attempt is recorded on its
    /// own: outcome `denied` for a 403, `error: CODE` for anything else.
    pub(crate) async fn mutate<T, F, Fut>(
        &self,
        attempt: Attempt,
        need: Need,
        action: F,
    ) -> Result<T, ApiError>
    where
        F: FnOnce(Actor) -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let actor = self.caller.actor(&need);
        let result = match self.allow(&need) {
            Ok(()) => action(actor.clone()).await,
            Err(e) => Err(e),
        };
        if let Some(a) = &self.audited {
            // Success and failure alike are on record from here on.
            a.set();
        }
        if let Err(e) = &result {
            self.record_failure(actor, attempt, &need, e).await;
        }
        result
    }

    async fn record_failure(&self, actor: Actor, attempt: Attempt, need: &Need, e: &ApiError) {
        let (outcome, params) = if e.is_denial() {
            let mut params = attempt.params;
            let denied = json!({ "needed": need.to_string(), "reason": e.code() });
            match params.as_object_mut() {
                Some(map) => {
                    map.insert("denied".into(), denied);
                }
                None => params = json!({ "params": params, "denied": denied }),
            }
            ("denied".to_owned(), params)
        } else {
            (format!("error: {}", e.code()), attempt.params)
        };
        let entry = NewAuditEntry::new(&actor, attempt.action, attempt.target, params)
            .with_outcome(outcome);
        if let Err(err) = self.store().audit_record(entry).await {
            // The response stays what it was (a refusal is still a refusal); the failure to
            // record it must not go unnoticed.
            tracing::error!(error = %err, action = attempt.action, "could not record a failed admin API attempt in the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token(&headers(&[])), Ok(None));
        assert_eq!(bearer_token(&headers(&["Bearer abc"])), Ok(Some("abc")));
        assert_eq!(bearer_token(&headers(&["bearer  abc "])), Ok(Some("abc")));
        assert_eq!(bearer_token(&headers(&["Basic abc"])), Err(()));
        assert_eq!(bearer_token(&headers(&["Bearer"])), Err(()));
        assert_eq!(bearer_token(&headers(&["Bearer "])), Err(()));
        assert_eq!(bearer_token(&headers(&["Bearer a", "Bearer b"])), Err(()));
    }
}
