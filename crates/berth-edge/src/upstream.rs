//! One upstream instance at run time: its keep-alive connection pool, in-flight count and
//! health. The pure [`HealthState`] decides; this wraps it with atomics so the request path
//! reads health without a lock and takes one only when something failed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpStream;

use crate::body::RequestBody;
use crate::error::ProxyError;
use crate::health::{HealthState, Outcome, Transition};
use crate::metrics::EdgeMetrics;
use crate::spec::{ActiveHealthSpec, PassiveHealthSpec, defaults};

pub type Sender = SendRequest<RequestBody>;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn millis_since_epoch(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_millis() as u64
}

/// The settings an instance was built with; a rebuilt table reuses the instance (and its
/// health history and idle connections) only when these are unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceSettings {
    pub active: Option<ActiveHealthSpec>,
    pub passive: PassiveHealthSpec,
    pub idle_timeout: Duration,
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub label: Arc<str>,
    pub settings: InstanceSettings,
    in_flight: AtomicUsize,
    active_healthy: AtomicBool,
    /// 0 = not ejected; otherwise the end of the ejection in ms since [`epoch`].
    ejected_until: AtomicU64,
    fail_streak: AtomicU32,
    checker: AtomicBool,
    state: Mutex<HealthState>,
    idle: Mutex<Vec<Idle>>,
    healthy_gauge: Gauge,
    ejections: Counter,
    checks_failed: Counter,
}

impl Upstream {
    pub fn new(
        addr: SocketAddr,
        group: &str,
        release: &str,
        settings: InstanceSettings,
        metrics: &EdgeMetrics,
    ) -> Self {
        let series = metrics.instance(group, release, addr);
        let state = HealthState::new(settings.active.as_ref(), &settings.passive);
        let healthy_gauge = series.healthy;
        healthy_gauge.set(1);
        Self {
            addr,
            label: Arc::from(addr.to_string()),
            in_flight: AtomicUsize::new(0),
            active_healthy: AtomicBool::new(state.is_active_healthy()),
            ejected_until: AtomicU64::new(0),
            fail_streak: AtomicU32::new(0),
            checker: AtomicBool::new(false),
            state: Mutex::new(state),
            idle: Mutex::new(Vec::new()),
            healthy_gauge,
            ejections: series.ejections,
            checks_failed: series.checks_failed,
            settings,
        }
    }

    /// True exactly once: for whoever starts this instance's health-check task.
    pub fn claim_checker(&self) -> bool {
        !self.checker.swap(true, Ordering::AcqRel)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn is_available(&self, now: Instant) -> bool {
        if !self.active_healthy.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        until == 0 || millis_since_epoch(now) >= until
    }

    /// Counts a request as outstanding until the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Passive health. A success while no failure streak is pending skips both the lock and
    /// the clock read, so the common case costs one atomic load.
    pub fn record(&self, outcome: Outcome) {
        // A success changes nothing while there is no failure streak and no ejection; an
        // ejection must still be looked at, or one that has run out is never ended (its
        // gauge would stay 0 for good when no active check runs).
        if matches!(outcome, Outcome::Success)
            && self.fail_streak.load(Ordering::Relaxed) == 0
            && self.ejected_until.load(Ordering::Relaxed) == 0
        {
            return;
        }
        let now = Instant::now();
        let transition = self.with_state(|s| s.on_outcome(outcome, now), now);
        self.note(transition);
    }

    pub fn record_check(&self, passed: bool, now: Instant) {
        if !passed {
            self.checks_failed.inc();
        }
        let transition = self.with_state(|s| s.on_check(passed, now), now);
        self.note(transition);
    }

    fn with_state(
        &self,
        f: impl FnOnce(&mut HealthState) -> Option<Transition>,
        now: Instant,
    ) -> Option<Transition> {
        let Ok(mut s) = self.state.lock() else {
            return None;
        };
        let ended = s.poll(now);
        let t = f(&mut s).or(ended);
        self.fail_streak
            .store(s.consecutive_failures(), Ordering::Relaxed);
        self.active_healthy
            .store(s.is_active_healthy(), Ordering::Relaxed);
        let until = s
            .ejected_until()
            .filter(|u| *u > now)
            .map(|u| millis_since_epoch(u).max(1))
            .unwrap_or(0);
        self.ejected_until.store(until, Ordering::Relaxed);
        self.healthy_gauge.set(i64::from(s.is_available(now)));
        t
    }

    fn note(&self, transition: Option<Transition>) {
        match transition {
            Some(Transition::Ejected { for_ }) => {
                self.ejections.inc();
                tracing::warn!(upstream = %self.label, seconds = for_.as_secs_f64(), "upstream ejected after failures");
            }
            Some(Transition::BecameUnhealthy) => {
                tracing::warn!(upstream = %self.label, "upstream failed its health checks");
            }
            Some(Transition::BecameHealthy) => {
                tracing::info!(upstream = %self.label, "upstream passes its health checks");
            }
            Some(Transition::EjectionEnded) => {
                tracing::info!(upstream = %self.label, "upstream ejection ended");
            }
            None => {}
        }
    }

    /// A ready connection: a pooled one when there is a live one, else a new one.
    pub async fn checkout(&self, connect_timeout: Duration) -> Result<Conn, ProxyError> {
        loop {
            let popped = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            let Some(Idle {
                mut sender, since, ..
            }) = popped
            else {
                break;
            };
            if since.elapsed() >= self.settings.idle_timeout || sender.is_closed() {
                continue;
            }
            // A connection is pooled once its last response ended; ready() only waits for
            // the connection task to notice that.
            if sender.ready().await.is_ok() {
                return Ok(Conn {
                    sender,
                    reused: true,
                });
            }
        }
        self.connect(connect_timeout).await
    }

    async fn connect(&self, timeout: Duration) -> Result<Conn, ProxyError> {
        let fail = |reason: String| ProxyError::Connect {
            upstream: self.label.to_string(),
            reason,
        };
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(self.addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(fail(e.to_string())),
            Err(_) => {
                return Err(fail(format!(
                    "timed out after {:.1} s",
                    timeout.as_secs_f64()
                )));
            }
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| fail(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(Conn {
            sender,
            reused: false,
        })
    }

    /// Opens a connection and pools it (warming before a switch); false when it could not.
    pub async fn open_idle(&self, timeout: Duration) -> bool {
        match self.connect(timeout).await {
            Ok(conn) => {
                self.pool(conn.sender, false);
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not open a connection ahead of a switch");
                false
            }
        }
    }

    /// Connections open to this instance that a request could use now: busy ones and idle
    /// ones not yet expired.
    pub fn connections(&self, now: Instant) -> usize {
        self.busy_and_idle(|i| now.saturating_duration_since(i.since) < self.settings.idle_timeout)
    }

    /// Connections requests have needed lately: busy ones, and idle ones a request returned
    /// within `recent`. Connections opened ahead of a switch and never used do not count, or
    /// each deploy would open as many again however little traffic there is.
    pub fn connections_used(&self, now: Instant, recent: Duration) -> usize {
        self.busy_and_idle(|i| i.used && now.saturating_duration_since(i.since) < recent)
    }

    /// Requests in flight, plus the idle connections `counts`.
    fn busy_and_idle(&self, counts: impl Fn(&Idle) -> bool) -> usize {
        self.in_flight() + crate::lock(&self.idle).iter().filter(|i| counts(i)).count()
    }

    /// Returns a connection a request is done with to the pool.
    pub fn checkin(&self, sender: Sender) {
        self.pool(sender, true);
    }

    fn pool(&self, sender: Sender, used: bool) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < defaults::UPSTREAM_MAX_IDLE_PER_INSTANCE
        {
            idle.push(Idle {
                sender,
                since: Instant::now(),
                used,
            });
        }
    }
}

/// A pooled connection, most recently returned last (a checkout takes the warmest).
struct Idle {
    sender: Sender,
    since: Instant,
    /// Returned by a request, rather than opened ahead of a switch.
    used: bool,
}

pub struct Conn {
    pub sender: Sender,
    pub reused: bool,
}

pub struct InFlight(Arc<Upstream>);

impl InFlight {
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::spec::PassiveHealthSpec;

    fn upstream(cool_off: Duration) -> Upstream {
        let metrics = EdgeMetrics::new(&mut Registry::default());
        let settings = InstanceSettings {
            active: None,
            passive: PassiveHealthSpec {
                consecutive_failures: 1,
                cool_off,
                max_cool_off: cool_off,
                ..PassiveHealthSpec::default()
            },
            idle_timeout: Duration::from_secs(1),
        };
        Upstream::new(
            SocketAddr::from(([127, 0, 0, 1], 9)),
            "g",
            "r",
            settings,
            &metrics,
        )
    }

    /// Without active checks only requests end an ejection: the first success after the
    /// cool-off must, although the failure streak was already reset at the ejection.
    #[test]
    fn an_ejection_that_ran_out_ends_on_the_next_success() {
        let u = upstream(Duration::from_millis(20));
        u.record(Outcome::Failure);
        assert!(!u.is_available(Instant::now()));
        assert_eq!(u.healthy_gauge.get(), 0);
        std::thread::sleep(Duration::from_millis(40));
        u.record(Outcome::Success);
        assert_eq!(u.healthy_gauge.get(), 1);
        assert_eq!(u.ejected_until.load(Ordering::Relaxed), 0);
        assert!(u.is_available(Instant::now()));
    }
}
