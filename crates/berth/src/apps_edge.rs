//! The edge's routing table as the file's routes plus every app's: the deployer publishes an
//! app's route here, a reload replaces the file's part, and each change re-applies the whole
//! composition (an atomic table swap; nothing is re-bound, nothing in flight is dropped).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use berth_deploy::routes::{compose, group_name, host_conflict};
use berth_deploy::{AppKey, AppRoute, BoxFuture, Publisher};
use berth_edge::spec::EdgeSpec;
use berth_edge::{ApplyReport, Edge, WARM_TIMEOUT, Warm};

use crate::serve::Server;

/// Locks `m` even after a panic elsewhere: both halves are replaced whole, never edited in
/// place, so a poisoned lock still holds a complete value.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The two halves of the routing table.
pub struct Routes {
    file: Mutex<EdgeSpec>,
    apps: Mutex<BTreeMap<AppKey, AppRoute>>,
}

impl Routes {
    pub fn new(file: EdgeSpec) -> Self {
        Routes {
            file: Mutex::new(file),
            apps: Mutex::new(BTreeMap::new()),
        }
    }

    /// Applies the composition (the file's routes first: on a shared host and path they
    /// win). The locks are held through `Edge::apply`, so when two changes race, the table
    /// applied last is built from both: a publish can never be undone by an older compose.
    /// Lock order, everywhere: the file's half, then the apps'.
    pub fn apply(&self, edge: &Edge) -> ApplyReport {
        let file = lock(&self.file);
        let apps = lock(&self.apps);
        edge.apply(&compose(&file, &apps))
    }

    /// The composition with `key` serving `route`, not applied.
    fn with(&self, key: &AppKey, route: &AppRoute) -> EdgeSpec {
        let file = lock(&self.file);
        let mut apps = lock(&self.apps).clone();
        apps.insert(key.clone(), route.clone());
        compose(&file, &apps)
    }

    /// Replaces the file's part (a reload; [`Routes::apply`] follows); returns warnings about
    /// app hosts it now hides.
    pub fn set_file(&self, spec: EdgeSpec) -> Vec<String> {
        let mut file = lock(&self.file);
        let warnings = lock(&self.apps)
            .iter()
            .filter_map(|(key, route)| {
                let why = host_conflict(&spec, &BTreeMap::new(), key, route)?;
                Some(format!("app {key}: {why}; the file's route wins"))
            })
            .collect();
        *file = spec;
        warnings
    }
}

/// The deployer's [`Publisher`]: changes the app half and applies the whole.
pub struct EdgePublisher(pub Arc<Server>);

impl Publisher for EdgePublisher {
    fn check(&self, key: &AppKey, route: &AppRoute) -> Option<String> {
        let routes = &self.0.routes;
        let file = lock(&routes.file);
        let apps = lock(&routes.apps);
        host_conflict(&file, &apps, key, route)
    }

    fn publish(&self, key: &AppKey, route: Option<AppRoute>) {
        {
            let mut apps = lock(&self.0.routes.apps);
            match route {
                Some(r) => apps.insert(key.clone(), r),
                None => apps.remove(key),
            };
        }
        self.0.routes.apply(&self.0.edge);
    }

    fn warm(&self, key: &AppKey, route: &AppRoute) -> BoxFuture<Warm> {
        let spec = self.0.routes.with(key, route);
        Box::pin(self.0.edge.warm(&spec, WARM_TIMEOUT))
    }

    fn in_flight(&self, key: &AppKey, release: &str) -> usize {
        self.0.edge.in_flight(&group_name(key), release)
    }

    fn stats(&self, key: &AppKey, release: &str) -> Option<berth_edge::stats::StatsSnapshot> {
        // An app's route is named like its group.
        self.0.edge.release_stats(&group_name(key), release)
    }
}
