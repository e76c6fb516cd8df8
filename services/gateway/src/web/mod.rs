//! The web shop, served by the gateway at `/` on the API's own origin (no
//! CORS): server-rendered pages ([`pages`]) from the same handlers the JSON
//! API runs, so a page shows exactly what the API answers, and a little
//! script of our own (`web/shop.js`) for the cart, the checkout's
//! submission, live availability and the live saga timeline. Sign-in is a
//! session cookie holding a JWT ([`session`]).

pub mod operations;
pub mod pages;
pub mod session;

use std::sync::Arc;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::Markup;
use serde::Deserialize;
use shipshape_auth::{ADMIN_SCOPE, Algorithm, Identity, Minter, VerificationKey, VerifierConfig};
use shipshape_runtime::config;

use crate::api::ListOrdersQuery;
use crate::auth::{Admin, Customer};
use crate::catalog_cache::CatalogCache;
use crate::error::{ApiError, ErrorBody};
use crate::routes;
use crate::state::{ApiState, AppState};
use operations::{FaultsJson, Operations, OperationsJson, PspAdmin};
use pages::Viewer;

/// The shop's settings.
#[derive(Clone, Debug, Default)]
pub struct WebConfig {
    /// `DEMO_SIGN_IN` (default false): offer the demo accounts' sign-in
    /// (`POST /api/v1/demo/sign-in/{customer}`). Needs HS256: the gateway
    /// mints the demo tokens with its own secret.
    pub demo_sign_in: bool,
    /// `JAEGER_UI_URL` (default none): where people reach Jaeger's UI; each
    /// saga step then links to its trace there.
    pub jaeger_ui_url: Option<String>,
    /// `SESSION_COOKIE_SECURE` (default false): send the session cookie
    /// over HTTPS only. Set it wherever the shop is served over HTTPS.
    pub secure_cookie: bool,
    /// `OPERATOR_METRICS_URLS` (default none): the processes whose
    /// `/metrics` the operator page reads, as `name=url` pairs, comma
    /// separated (`payment=http://payment:9103/metrics,...`).
    pub operator_metrics: Vec<(String, String)>,
    /// `PSP_ADMIN_URL` (default none): the PSP simulator whose faults the
    /// operator page sets, e.g. `http://127.0.0.1:8090`.
    pub psp_admin_url: Option<String>,
    /// `PSP_ADMIN_TOKEN` (or `PSP_ADMIN_TOKEN_FILE`): the simulator's admin
    /// token, which it wants from callers on another machine.
    pub psp_admin_token: Option<Redacted>,
}

/// A secret setting: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl WebConfig {
    pub fn from_env() -> anyhow::Result<Self> {
        let jaeger = config::string_or("JAEGER_UI_URL", "")?;
        Ok(Self {
            demo_sign_in: config::var_or("DEMO_SIGN_IN", false)?,
            jaeger_ui_url: (!jaeger.trim().is_empty()).then_some(jaeger),
            secure_cookie: config::var_or("SESSION_COOKIE_SECURE", false)?,
            operator_metrics: operations::parse_processes(&config::string_or(
                "OPERATOR_METRICS_URLS",
                "",
            )?)
            .context("OPERATOR_METRICS_URLS")?,
            psp_admin_url: Some(config::string_or("PSP_ADMIN_URL", "")?)
                .filter(|url| !url.trim().is_empty()),
            psp_admin_token: config::value_or_file("PSP_ADMIN_TOKEN")?.map(Redacted),
        })
    }
}

/// What the shop's handlers share.
#[derive(Clone)]
pub struct WebState {
    config: Arc<WebConfig>,
    /// Mints the demo accounts' tokens; `None` with the demo sign-in off.
    minter: Option<Arc<Minter>>,
    /// The operator page's figures.
    operations: Arc<Operations>,
    /// The PSP simulator's faults; `None` without `PSP_ADMIN_URL`.
    psp: Option<Arc<PspAdmin>>,
}

impl WebState {
    pub fn new(config: &WebConfig, auth: &VerifierConfig) -> anyhow::Result<Self> {
        let minter = if config.demo_sign_in {
            let (Algorithm::Hs256, VerificationKey::Secret(secret)) = (&auth.algorithm, &auth.key)
            else {
                bail!(
                    "DEMO_SIGN_IN needs JWT_ALGORITHM=HS256: the gateway signs the demo \
                     accounts' tokens with JWT_HS256_SECRET"
                );
            };
            let minter = Minter::hs256(secret, &auth.issuer, &auth.audience)
                .context("the demo sign-in's minter")?;
            Some(Arc::new(minter))
        } else {
            None
        };
        let psp = match &config.psp_admin_url {
            Some(url) => Some(Arc::new(PspAdmin::new(
                url,
                config.psp_admin_token.as_ref().map(|token| token.0.clone()),
            )?)),
            None => None,
        };
        Ok(Self {
            config: Arc::new(config.clone()),
            minter,
            operations: Arc::new(Operations::new(config.operator_metrics.clone())?),
            psp,
        })
    }

    fn jaeger_ui(&self) -> Option<&str> {
        self.config.jaeger_ui_url.as_deref()
    }
}

/// The shop's pages, their script and style. Its session's API routes
/// ([`demo_sign_in`], [`sign_out`]) are the API's, in `crate::router`.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(shop))
        .route("/products/{sku}", get(product))
        .route("/cart", get(cart))
        .route("/checkout", get(checkout))
        .route("/orders", get(orders))
        .route("/orders/{id}", get(order))
        .route("/orders/{id}/steps", get(steps))
        .route("/sign-in", get(sign_in))
        .route("/operator", get(operator))
        .route("/static/shop.js", get(script))
        .route("/static/shop.css", get(style))
}

/// Whoever is looking: signed in or not, pages are served.
pub(crate) struct Viewing(Option<Identity>);

impl<S: Send + Sync> FromRequestParts<S> for Viewing {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Viewing(parts.extensions.get::<Identity>().cloned()))
    }
}

impl Viewing {
    fn viewer(&self) -> Viewer {
        Viewer {
            subject: self.0.as_ref().map(|id| id.subject().to_owned()),
            admin: self.0.as_ref().is_some_and(|id| id.has_scope(ADMIN_SCOPE)),
        }
    }

    /// The signed-in caller, or the way to the sign-in page and back to
    /// `here`.
    fn signed_in(&self, here: &str) -> Result<Identity, SignInFirst> {
        self.0.clone().ok_or_else(|| SignInFirst {
            back_to: here.to_owned(),
        })
    }
}

/// A page that needs a signed-in caller, asked for by someone signed out:
/// a redirect to the sign-in page, which leads back.
struct SignInFirst {
    back_to: String,
}

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        let next = format!("/sign-in?next={}", encode_query_value(&self.back_to));
        (StatusCode::SEE_OTHER, [(LOCATION, next)]).into_response()
    }
}

/// `value` percent-encoded for a query string.
fn encode_query_value(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                char::from(byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// The policy every page is served with: only this origin's script and
/// style run (there is no inline script), and no other site frames it.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
    form-action 'self'";

/// A page, with `status`.
fn page(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                HeaderName::from_static("content-security-policy"),
                CONTENT_SECURITY_POLICY,
            ),
            (HeaderName::from_static("x-content-type-options"), "nosniff"),
            (HeaderName::from_static("referrer-policy"), "same-origin"),
            (CACHE_CONTROL, "no-store"),
        ],
        markup.into_string(),
    )
        .into_response()
}

/// The page for an error the API answered: its status and its message.
fn problem(viewer: &Viewer, error: &ApiError) -> Response {
    let title = match error.status() {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::BAD_REQUEST => "Bad request",
        status if status.is_server_error() => "Unavailable",
        _ => "Something went wrong",
    };
    page(
        error.status(),
        pages::problem(viewer, title, error.message()),
    )
}

/// `GET /`: the catalog.
async fn shop(
    viewing: Viewing,
    State(app): State<AppState>,
    State(catalog): State<Arc<CatalogCache>>,
) -> Response {
    let viewer = viewing.viewer();
    match routes::list_products(State(app), State(catalog)).await {
        Ok(answer) => {
            let (list, age) = answer.into_parts();
            page(
                StatusCode::OK,
                pages::catalog(&viewer, &list.products, age.is_some()),
            )
        }
        Err(error) => problem(&viewer, &error),
    }
}

/// `GET /products/{sku}`.
async fn product(
    viewing: Viewing,
    State(app): State<AppState>,
    State(catalog): State<Arc<CatalogCache>>,
    Path(sku): Path<String>,
) -> Response {
    let viewer = viewing.viewer();
    match routes::get_product(State(app), State(catalog), Ok(Path(sku))).await {
        Ok(answer) => page(
            StatusCode::OK,
            pages::product(&viewer, &answer.into_parts().0),
        ),
        Err(error) => problem(&viewer, &error),
    }
}

/// `GET /cart`.
async fn cart(viewing: Viewing) -> Response {
    page(StatusCode::OK, pages::cart(&viewing.viewer()))
}

/// `GET /checkout`: signed-in callers only.
async fn checkout(viewing: Viewing) -> Response {
    if let Err(to_sign_in) = viewing.signed_in("/checkout") {
        return to_sign_in.into_response();
    }
    let key = uuid::Uuid::new_v4().to_string();
    page(StatusCode::OK, pages::checkout(&viewing.viewer(), &key))
}

#[derive(Debug, Deserialize)]
struct OrdersPage {
    page_token: Option<String>,
}

/// `GET /orders?page_token=`: the caller's orders.
async fn orders(
    viewing: Viewing,
    State(app): State<AppState>,
    query: Result<Query<OrdersPage>, QueryRejection>,
) -> Response {
    let viewer = viewing.viewer();
    let caller = match viewing.signed_in("/orders") {
        Ok(caller) => caller,
        Err(to_sign_in) => return to_sign_in.into_response(),
    };
    let page_token = match query {
        Ok(Query(query)) => query.page_token,
        Err(rejection) => return problem(&viewer, &ApiError::from(rejection)),
    };
    let query = ListOrdersQuery {
        limit: None,
        page_token,
    };
    match routes::list_orders(Customer(caller), State(app), Ok(Query(query))).await {
        Ok(list) => page(StatusCode::OK, pages::orders(&viewer, &list.0)),
        Err(error) => problem(&viewer, &error),
    }
}

/// `GET /orders/{id}`: the order and its saga. Another customer's order is
/// a 404 page, as the API answers.
async fn order(viewing: Viewing, State(app): State<AppState>, Path(id): Path<String>) -> Response {
    let viewer = viewing.viewer();
    let caller = match viewing.signed_in(&format!("/orders/{id}")) {
        Ok(caller) => caller,
        Err(to_sign_in) => return to_sign_in.into_response(),
    };
    let (order, timeline) = tokio::join!(
        routes::get_order(
            Customer(caller.clone()),
            State(app.clone()),
            Ok(Path(id.clone()))
        ),
        routes::get_order_timeline(Customer(caller), State(app.clone()), Ok(Path(id))),
    );
    match (order, timeline) {
        (Ok(order), Ok(timeline)) => page(
            StatusCode::OK,
            pages::order(&viewer, &order.0, &timeline.0, app.web.jaeger_ui()),
        ),
        (Err(error), _) | (_, Err(error)) => problem(&viewer, &error),
    }
}

/// `GET /orders/{id}/steps`: the timeline's status and steps alone, which
/// the order page's script puts in place when the stream says they changed.
async fn steps(viewing: Viewing, State(app): State<AppState>, Path(id): Path<String>) -> Response {
    let viewer = viewing.viewer();
    // A fragment: signed out (the session expired), it is no page to follow.
    let Some(caller) = viewing.0 else {
        return ApiError::unauthenticated(None).into_response();
    };
    match routes::get_order_timeline(Customer(caller), State(app.clone()), Ok(Path(id))).await {
        Ok(timeline) => page(
            StatusCode::OK,
            pages::steps(&timeline.0, app.web.jaeger_ui()),
        ),
        Err(error) => problem(&viewer, &error),
    }
}

#[derive(Debug, Deserialize)]
struct SignInPage {
    next: Option<String>,
}

/// `GET /sign-in?next=`.
async fn sign_in(
    viewing: Viewing,
    State(app): State<AppState>,
    query: Result<Query<SignInPage>, QueryRejection>,
) -> Response {
    let next = query.ok().and_then(|Query(query)| query.next);
    let next = session::local_path(next.as_deref());
    page(
        StatusCode::OK,
        pages::sign_in(&viewing.viewer(), app.web.minter.is_some(), next),
    )
}

/// Who a demo sign-in made the caller.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SignedInJson {
    #[schema(example = "alice")]
    pub subject: String,
    /// `["admin"]` for the operator, else none.
    pub scopes: Vec<String>,
}

/// `POST /api/v1/demo/sign-in/{customer}`: signs in as a demo account and
/// answers who that is; 404 `demo_sign_in_off` when the demo sign-in is off,
/// 404 `not_found` for an account it does not offer.
#[utoipa::path(
    post,
    path = "/api/v1/demo/sign-in/{customer}",
    tag = "session",
    params(("customer" = String, Path, description = "A demo account: `alice`, `bob` (customers) or `ops` (an operator)", example = "alice")),
    responses(
        (status = 200, description = "Signed in: the session cookie is set (`HttpOnly`, `SameSite=Strict`) and carries the account's token", body = SignedInJson,
            headers(("Set-Cookie" = String, description = "`shipshape_session=<jwt>; Path=/; Max-Age=28800; HttpOnly; SameSite=Strict`"))),
        (status = 401, description = "A bearer token was sent and refused", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "The Bearer challenge (RFC 6750)"))),
        (status = 400, description = "Another site's page sent it (`cross_site`, from `Sec-Fetch-Site`)", body = ErrorBody),
        (status = 404, description = "The demo sign-in is off (`demo_sign_in_off`), or there is no such demo account (`not_found`)", body = ErrorBody),
        (status = 429, description = "Too many requests from this client (`rate_limited`), or too many of them in flight at once (`too_many_in_flight`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 503, description = "The gateway is at capacity (`overloaded`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
pub async fn demo_sign_in(
    State(app): State<AppState>,
    Path(customer): Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    // Another site must not sign its visitors in here (login CSRF).
    if session::sent_by_another_site(&headers) {
        return ApiError::bad_request("cross_site", "signing in is only for this site's own pages")
            .into_response();
    }
    let Some(minter) = &app.web.minter else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "demo_sign_in_off",
            "the demo sign-in is switched off (DEMO_SIGN_IN)",
        )
        .into_response();
    };
    let Some(account) = session::demo_account(&customer) else {
        return ApiError::not_found(format!("no demo account {customer:?}")).into_response();
    };
    let token = match minter.mint(account.subject, account.scopes, session::DEMO_SESSION) {
        Ok(token) => token,
        Err(error) => {
            tracing::error!(%error, "a demo token could not be minted");
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the sign-in failed",
            )
            .into_response();
        }
    };
    tracing::info!(subject = account.subject, "demo sign-in");
    let cookie = session::set_cookie(&token, session::DEMO_SESSION, app.web.config.secure_cookie);
    (
        [(SET_COOKIE, cookie)],
        axum::Json(SignedInJson {
            subject: account.subject.to_owned(),
            scopes: account.scopes.iter().map(|s| (*s).to_owned()).collect(),
        }),
    )
        .into_response()
}

/// `POST /api/v1/sign-out`: ends the session cookie (a bearer token has no
/// session to end).
#[utoipa::path(
    post,
    path = "/api/v1/sign-out",
    tag = "session",
    responses(
        (status = 204, description = "Signed out: the session cookie is cleared",
            headers(("Set-Cookie" = String, description = "`shipshape_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict`"))),
        (status = 401, description = "A bearer token was sent and refused", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "The Bearer challenge (RFC 6750)"))),
        (status = 429, description = "Too many requests from this client (`rate_limited`), or too many of them in flight at once (`too_many_in_flight`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 503, description = "The gateway is at capacity (`overloaded`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
pub async fn sign_out(State(app): State<AppState>) -> Response {
    (
        StatusCode::NO_CONTENT,
        [(
            SET_COOKIE,
            session::clear_cookie(app.web.config.secure_cookie),
        )],
    )
        .into_response()
}

/// `GET /operator`: the operators' page, for the `admin` scope.
async fn operator(viewing: Viewing, State(app): State<AppState>) -> Response {
    let viewer = viewing.viewer();
    if let Err(to_sign_in) = viewing.signed_in("/operator") {
        return to_sign_in.into_response();
    }
    if !viewer.admin {
        return problem(&viewer, &ApiError::insufficient_scope(ADMIN_SCOPE));
    }
    let figures = app.web.operations.figures().await;
    let faults = match &app.web.psp {
        Some(psp) => Some(psp.faults().await),
        None => None,
    };
    page(
        StatusCode::OK,
        pages::operator(&viewer, &figures, faults.as_ref()),
    )
}

/// `GET /api/v1/admin/operations`: checkouts/s, p99, saga outcomes,
/// breakers and bulkheads, from the services' own metrics. For callers
/// with the `admin` scope only.
#[utoipa::path(
    get,
    path = "/api/v1/admin/operations",
    tag = "admin",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The figures since the previous reading (the first has no rates)", body = OperationsJson),
        (status = 401, description = "No bearer token, or one that was refused", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "The Bearer challenge (RFC 6750)"))),
        (status = 403, description = "The token lacks the `admin` scope (`insufficient_scope`)", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "The Bearer challenge, with `error=\"insufficient_scope\"`"))),
        (status = 429, description = "Too many requests from this client (`rate_limited`), or too many of them in flight at once (`too_many_in_flight`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 503, description = "The gateway is at capacity (`overloaded`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
pub async fn admin_operations(_: Admin, State(app): State<AppState>) -> axum::Json<OperationsJson> {
    axum::Json(app.web.operations.figures().await)
}

/// `GET /api/v1/admin/psp/faults`: the faults the PSP simulator injects.
#[utoipa::path(
    get,
    path = "/api/v1/admin/psp/faults",
    tag = "admin",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The simulator's faults", body = FaultsJson),
        (status = 401, description = "No bearer token, or one that was refused", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "The Bearer challenge (RFC 6750)"))),
        (status = 403, description = "The token lacks the `admin` scope (`insufficient_scope`)", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "The Bearer challenge, with `error=\"insufficient_scope\"`"))),
        (status = 404, description = "No simulator is configured (`psp_admin_off`: `PSP_ADMIN_URL`)", body = ErrorBody),
        (status = 429, description = "Too many requests from this client (`rate_limited`), or too many of them in flight at once (`too_many_in_flight`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 502, description = "The simulator failed or refused (`upstream_error`)", body = ErrorBody),
        (status = 503, description = "The gateway is at capacity (`overloaded`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
pub async fn psp_faults(
    _: Admin,
    State(app): State<AppState>,
) -> Result<axum::Json<FaultsJson>, ApiError> {
    let psp = psp_admin(&app)?;
    psp.faults()
        .await
        .map(axum::Json)
        .map_err(|reason| ApiError::malformed_response(PSP_SIMULATOR, reason))
}

/// `PUT /api/v1/admin/psp/faults` with `{"latency_ms", "error_rate",
/// "lose_response_rate"}`: replaces the faults the PSP simulator injects.
#[utoipa::path(
    put,
    path = "/api/v1/admin/psp/faults",
    tag = "admin",
    security(("bearerAuth" = [])),
    request_body(content = FaultsJson, content_type = "application/json"),
    responses(
        (status = 200, description = "The simulator's faults, as now set", body = FaultsJson),
        (status = 400, description = "The faults are out of bounds (`invalid_faults`) or malformed (`invalid_json`)", body = ErrorBody),
        (status = 401, description = "No bearer token, or one that was refused", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "The Bearer challenge (RFC 6750)"))),
        (status = 403, description = "The token lacks the `admin` scope (`insufficient_scope`)", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "The Bearer challenge, with `error=\"insufficient_scope\"`"))),
        (status = 404, description = "No simulator is configured (`psp_admin_off`: `PSP_ADMIN_URL`)", body = ErrorBody),
        (status = 408, description = "The body arrived too slowly (`body_timeout`); the connection is closed", body = ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB (`payload_too_large`)", body = ErrorBody),
        (status = 415, description = "The body is not `Content-Type: application/json` (`unsupported_media_type`)", body = ErrorBody),
        (status = 429, description = "Too many requests from this client (`rate_limited`), or too many of them in flight at once (`too_many_in_flight`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 502, description = "The simulator failed or refused (`upstream_error`)", body = ErrorBody),
        (status = 503, description = "The gateway is at capacity (`overloaded`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
pub async fn set_psp_faults(
    Admin(caller): Admin,
    State(app): State<AppState>,
    body: Result<axum::Json<FaultsJson>, JsonRejection>,
) -> Result<axum::Json<FaultsJson>, ApiError> {
    let axum::Json(faults) = body?;
    faults.check()?;
    let psp = psp_admin(&app)?;
    let set = psp
        .set_faults(&faults)
        .await
        .map_err(|reason| ApiError::malformed_response(PSP_SIMULATOR, reason))?;
    tracing::warn!(
        operator = caller.subject(),
        ?set,
        "PSP simulator faults set"
    );
    Ok(axum::Json(set))
}

const PSP_SIMULATOR: &str = "psp-simulator";

fn psp_admin(app: &AppState) -> Result<&PspAdmin, ApiError> {
    app.web.psp.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "psp_admin_off",
            "no PSP simulator is configured here (PSP_ADMIN_URL)",
        )
    })
}

/// The shop's script and style: ours, built into the binary.
async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../web/shop.js"),
    )
}

async fn style() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../web/shop.css"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Revalidated on each page: a new gateway serves the new script.
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                HeaderName::from_static("x-content-type-options"),
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_return_path_is_encoded_for_the_query() {
        assert_eq!(encode_query_value("/orders/ab-12"), "/orders/ab-12");
        assert_eq!(encode_query_value("/a b&c=d"), "/a%20b%26c%3Dd");
    }
}
