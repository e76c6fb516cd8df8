//! What the handlers share, as axum state: each handler takes the part it
//! needs.

use std::sync::Arc;

use axum::extract::FromRef;
use shipshape_runtime::CancellationToken;

use crate::catalog_cache::CatalogCache;
use crate::upstream::{Inventory, Orders};
use crate::web::WebState;

/// What every handler shares: one client per upstream, each call going
/// through that upstream's resilience stack. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub orders: Orders,
    pub inventory: Inventory,
    /// Cancelled when the gateway shuts down: every open event stream then
    /// ends, so the graceful shutdown does not wait for browsers.
    pub streams: CancellationToken,
    /// The web shop's settings and its demo sign-in.
    pub web: WebState,
}

/// What the handlers share: the upstream clients, and the catalog the
/// gateway remembers. Handlers take the part they need (`State<AppState>`,
/// `State<Arc<CatalogCache>>`).
#[derive(Clone)]
pub(crate) struct ApiState {
    pub(crate) upstream: AppState,
    pub(crate) catalog: Arc<CatalogCache>,
}

impl FromRef<ApiState> for AppState {
    fn from_ref(state: &ApiState) -> Self {
        state.upstream.clone()
    }
}

impl FromRef<ApiState> for Arc<CatalogCache> {
    fn from_ref(state: &ApiState) -> Self {
        state.catalog.clone()
    }
}
