//! The web shop, served by the gateway at `/` on the API's own origin (no
//! CORS): server-rendered pages ([`pages`]) from the same handlers the JSON
//! API runs, so a page shows exactly what the API answers, and a little
//! script of our own (`web/shop.js`) for the cart, the checkout's
//! submission, live availability and the live saga timeline. Sign-in is a
//! session cookie holding a JWT ([`session`]).

pub mod pages;
pub mod session;

use std::sync::Arc;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::rejection::QueryRejection;
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
use crate::auth::Customer;
use crate::catalog_cache::CatalogCache;
use crate::error::{ApiError, ErrorBody};
use crate::routes;
use crate::state::{ApiState, AppState};
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
}

impl WebConfig {
    pub fn from_env() -> anyhow::Result<Self> {
        let jaeger = config::string_or("JAEGER_UI_URL", "")?;
        Ok(Self {
            demo_sign_in: config::var_or("DEMO_SIGN_IN", false)?,
            jaeger_ui_url: (!jaeger.trim().is_empty()).then_some(jaeger),
            secure_cookie: config::var_or("SESSION_COOKIE_SECURE", false)?,
        })
    }
}

/// What the shop's handlers share.
#[derive(Clone)]
pub struct WebState {
    config: Arc<WebConfig>,
    /// Mints the demo accounts' tokens; `None` with the demo sign-in off.
    minter: Option<Arc<Minter>>,
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
        Ok(Self {
            config: Arc::new(config.clone()),
            minter,
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
    let caller = match viewing.signed_in(&format!("/orders/{id}")) {
        Ok(caller) => caller,
        Err(to_sign_in) => return to_sign_in.into_response(),
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
        (status = 404, description = "The demo sign-in is off (`demo_sign_in_off`), or there is no such demo account (`not_found`)", body = ErrorBody),
        (status = 429, description = "Too many requests from this client (`rate_limited`), or too many of them in flight at once (`too_many_in_flight`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 503, description = "The gateway is at capacity (`overloaded`)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
pub async fn demo_sign_in(State(app): State<AppState>, Path(customer): Path<String>) -> Response {
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
