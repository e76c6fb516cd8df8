//! The order API over gRPC: create (idempotent by key), read and list the
//! caller's orders.

use std::collections::HashMap;

use prost::Message;
use shipshape_auth::{ADMIN_SCOPE, Identity};
use shipshape_messaging::{KafkaSettings, outbox};
use shipshape_proto::inventory::inventory_service_client::InventoryServiceClient;
use shipshape_proto::inventory::{PriceSkusRequest, PriceSkusResponse};
use shipshape_proto::order::order_service_server::OrderService;
use shipshape_proto::order::{
    CreateOrderRequest, CreateOrderResponse, GetOrderRequest, GetOrderTimelineRequest,
    ListOrdersRequest, ListOrdersResponse, Order, OrderTimeline, RebuildOrderTimelinesRequest,
    RebuildOrderTimelinesResponse, WatchOrderTimelineRequest,
};
use shipshape_proto::{Event, error_status, events};
use shipshape_resilience::{Downstream, Idempotency, ResilienceError};
use shipshape_runtime::CancellationToken;
use shipshape_runtime::grpc::ClientMetricsLayer;
use shipshape_telemetry::grpc::TracedChannel;
use shipshape_types::{InvalidValue, Money, OrderId, Sku};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

use crate::events::PRODUCER;
use crate::listing;
use crate::placement::{self, OrderRequest, PricedLine};
use crate::store::{self, NewOrder};
use crate::timeline::{self, RebuildError};
use crate::watch::{self, TimelineNews};

/// The downstream name of the inventory service, in metrics and errors.
pub const INVENTORY: &str = "inventory";

/// Inventory's `PriceSkus` behind the resilience stack. Boxed, because the
/// client call is a closure whose type cannot be named in a struct.
type PriceSkus = BoxCloneSyncService<PriceSkusRequest, PriceSkusResponse, ResilienceError<Status>>;

pub struct OrderApi {
    pool: PgPool,
    price_skus: PriceSkus,
    deadline_secs: f64,
    /// Where timeline rebuilds read the event topics.
    kafka: KafkaSettings,
    /// What timeline streams follow, and when they end.
    news: TimelineNews,
    shutdown: CancellationToken,
}

/// The settings of the order API beside its pool and pricing client.
pub struct OrderApiSettings {
    pub deadline_secs: f64,
    pub kafka: KafkaSettings,
    pub news: TimelineNews,
    /// Ends every open timeline stream.
    pub shutdown: CancellationToken,
}

impl OrderApi {
    /// Pricing calls to `inventory` go through `downstream`'s stack.
    pub fn new(
        pool: PgPool,
        inventory: InventoryServiceClient<TracedChannel>,
        downstream: &Downstream,
        settings: OrderApiSettings,
    ) -> Self {
        let price_skus = ServiceBuilder::new()
            // Pricing is a read: safe to retry.
            .layer(downstream.layer(Idempotency::Idempotent))
            // Inside the stack: each attempt is one request.
            .layer(ClientMetricsLayer::new(INVENTORY, "PriceSkus"))
            .service_fn(move |request: PriceSkusRequest| {
                let mut inventory = inventory.clone();
                async move {
                    inventory
                        .price_skus(request)
                        .await
                        .map(Response::into_inner)
                }
            });
        Self {
            pool,
            price_skus: BoxCloneSyncService::new(price_skus),
            deadline_secs: settings.deadline_secs,
            kafka: settings.kafka,
            news: settings.news,
            shutdown: settings.shutdown,
        }
    }
}

/// Everything the order API can fail with, mapped to gRPC once.
#[derive(Debug, thiserror::Error)]
enum OrderApiError {
    #[error(transparent)]
    Invalid(#[from] InvalidValue),
    #[error("this idempotency key was already used for a different request")]
    KeyReused,
    #[error("no order {0}")]
    NotFound(String),
    #[error("this needs the `{ADMIN_SCOPE}` scope")]
    NotAdmin,
    #[error(transparent)]
    Rebuild(#[from] RebuildError),
    #[error("inventory: {}", .0.message())]
    Inventory(Status),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<OrderApiError> for Status {
    fn from(error: OrderApiError) -> Self {
        match error {
            OrderApiError::Invalid(invalid) => {
                error_status(Code::InvalidArgument, invalid.code, invalid.message)
            }
            OrderApiError::KeyReused => error_status(
                Code::FailedPrecondition,
                "idempotency_key_reused",
                OrderApiError::KeyReused.to_string(),
            ),
            OrderApiError::NotFound(_) => {
                error_status(Code::NotFound, "not_found", error.to_string())
            }
            OrderApiError::NotAdmin => error_status(
                Code::PermissionDenied,
                "insufficient_scope",
                error.to_string(),
            ),
            OrderApiError::Rebuild(RebuildError::AlreadyRunning) => {
                error_status(Code::Aborted, "rebuild_running", error.to_string())
            }
            OrderApiError::Rebuild(RebuildError::Database(e)) => {
                shipshape_runtime::database::query_failed(&e, "order")
            }
            OrderApiError::Rebuild(
                ref failed @ (RebuildError::OutboxNotDraining(_) | RebuildError::Replay(_)),
            ) => {
                tracing::warn!(error = %failed, "timeline rebuild failed");
                error_status(Code::Unavailable, "rebuild_failed", failed.to_string())
            }
            // The catalog's own verdict on the request (e.g. unknown_sku) passes through.
            OrderApiError::Inventory(status) if status.code() == Code::InvalidArgument => status,
            // Anything else, the stack's refusals (timeout, circuit_open,
            // bulkhead_full) included, means no price now: the caller gets
            // one code it can answer 503 for.
            OrderApiError::Inventory(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "inventory call failed");
                error_status(
                    Code::Unavailable,
                    "inventory_unavailable",
                    "inventory is unavailable",
                )
            }
            OrderApiError::Database(e) => shipshape_runtime::database::query_failed(&e, "order"),
        }
    }
}

impl OrderApi {
    /// The order earlier created under this key, if any. The same key with a
    /// different request is an error rather than a silent second order.
    async fn replay(
        &self,
        customer_id: &str,
        key: &str,
        fingerprint: &[u8],
    ) -> Result<Option<CreateOrderResponse>, OrderApiError> {
        let Some((order_id, stored)) =
            store::find_by_idempotency_key(&self.pool, customer_id, key).await?
        else {
            return Ok(None);
        };
        if stored != fingerprint {
            return Err(OrderApiError::KeyReused);
        }
        let mut conn = self.pool.acquire().await?;
        let order = store::load_order(&mut conn, order_id)
            .await?
            .ok_or_else(|| OrderApiError::NotFound(order_id.to_string()))?;
        Ok(Some(CreateOrderResponse {
            order: Some(order),
            replayed: true,
        }))
    }

    /// The timeline of `caller`'s order `order_id`, its entries after
    /// `after`. As for GetOrder, another customer's order is a missing one.
    async fn own_timeline(
        &self,
        caller: &Identity,
        order_id: OrderId,
        after: i64,
    ) -> Result<OrderTimeline, OrderApiError> {
        let mut conn = self.pool.acquire().await?;
        match timeline::load(&mut conn, order_id, after).await? {
            Some((owner, timeline)) if owner == caller.subject() => Ok(timeline),
            _ => Err(OrderApiError::NotFound(order_id.to_string())),
        }
    }

    async fn prices(&self, request: &OrderRequest) -> Result<HashMap<Sku, Money>, OrderApiError> {
        let skus = request
            .lines
            .iter()
            .map(|(sku, _)| sku.to_string())
            .collect();
        let response = self
            .price_skus
            .clone()
            .oneshot(PriceSkusRequest { skus })
            .await
            .map_err(|error| OrderApiError::Inventory(error.into()))?;
        Ok(response
            .prices
            .iter()
            .filter_map(|p| {
                let price = Money::try_from(p.unit_price.as_ref()?).ok()?;
                Some((Sku::parse(&p.sku).ok()?, price))
            })
            .collect())
    }

    async fn create(
        &self,
        caller: &Identity,
        raw: CreateOrderRequest,
    ) -> Result<CreateOrderResponse, OrderApiError> {
        let request = placement::validate(caller.subject(), &raw)?;
        // The request without its key identifies "the same request" on retry.
        let fingerprint = CreateOrderRequest {
            idempotency_key: String::new(),
            ..raw
        }
        .encode_to_vec();
        if let Some(key) = &request.idempotency_key
            && let Some(replayed) = self.replay(&request.customer_id, key, &fingerprint).await?
        {
            return Ok(replayed);
        }
        let prices = self.prices(&request).await?;
        let (lines, total) = placement::price(&request.lines, &prices)?;
        let order_id = OrderId::generate();
        let new = NewOrder {
            order_id,
            request: &request,
            lines: &lines,
            total,
            fingerprint: &fingerprint,
            deadline_secs: self.deadline_secs,
        };
        let mut tx = self.pool.begin().await?;
        if !store::insert_order(&mut tx, &new).await? {
            // A concurrent retry with the same key won the insert.
            tx.rollback().await?;
            let key = request.idempotency_key.as_deref().unwrap_or_default();
            return self
                .replay(&request.customer_id, key, &fingerprint)
                .await?
                .ok_or_else(|| OrderApiError::NotFound(key.to_owned()));
        }
        let placed = Event::OrderPlaced(order_placed(&request, &lines, total));
        let sent = outbox::enqueue(&mut tx, PRODUCER, order_id, &placed).await?;
        timeline::record_current(&mut tx, &sent).await?;
        // Read back before the commit: the answer shows the order as placed.
        // Read after it, a busy process could answer with whatever state the
        // saga had reached by then (a first answer already CONFIRMED).
        let order = store::load_order(&mut tx, order_id)
            .await?
            .ok_or_else(|| OrderApiError::NotFound(order_id.to_string()))?;
        tx.commit().await?;
        tracing::info!(%order_id, total = total.amount_minor, "order placed");
        Ok(CreateOrderResponse {
            order: Some(order),
            replayed: false,
        })
    }
}

fn order_placed(request: &OrderRequest, lines: &[PricedLine], total: Money) -> events::OrderPlaced {
    events::OrderPlaced {
        customer_id: request.customer_id.clone(),
        lines: lines
            .iter()
            .map(|l| events::OrderLine {
                sku: l.sku.to_string(),
                quantity: l.quantity.get(),
                unit_price: Some(l.unit_price.into()),
            })
            .collect(),
        total: Some(total.into()),
        card_token: request.card_token.clone(),
        shipping_address: Some(request.address.clone().into()),
    }
}

#[tonic::async_trait]
impl OrderService for OrderApi {
    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<CreateOrderResponse>, Status> {
        let caller = Identity::from_metadata(request.metadata())?;
        Ok(Response::new(
            self.create(&caller, request.into_inner()).await?,
        ))
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        let caller = Identity::from_metadata(request.metadata())?;
        let order_id: OrderId = request
            .into_inner()
            .order_id
            .parse()
            .map_err(OrderApiError::Invalid)?;
        // Another customer's order is answered exactly like a missing one,
        // so order ids cannot be probed for.
        let mut conn = self.pool.acquire().await.map_err(OrderApiError::from)?;
        match store::load_order(&mut conn, order_id)
            .await
            .map_err(OrderApiError::from)?
        {
            Some(order) if order.customer_id == caller.subject() => Ok(Response::new(order)),
            _ => Err(OrderApiError::NotFound(order_id.to_string()).into()),
        }
    }

    async fn get_order_timeline(
        &self,
        request: Request<GetOrderTimelineRequest>,
    ) -> Result<Response<OrderTimeline>, Status> {
        let caller = Identity::from_metadata(request.metadata())?;
        let order_id: OrderId = request
            .into_inner()
            .order_id
            .parse()
            .map_err(OrderApiError::Invalid)?;
        Ok(Response::new(
            self.own_timeline(&caller, order_id, 0).await?,
        ))
    }

    type WatchOrderTimelineStream = ReceiverStream<Result<OrderTimeline, Status>>;

    async fn watch_order_timeline(
        &self,
        request: Request<WatchOrderTimelineRequest>,
    ) -> Result<Response<Self::WatchOrderTimelineStream>, Status> {
        let caller = Identity::from_metadata(request.metadata())?;
        let request = request.into_inner();
        let order_id: OrderId = request.order_id.parse().map_err(OrderApiError::Invalid)?;
        // Before the first read: what is recorded after it is then heard of.
        let news = self.news.subscribe();
        let after = request.after_sequence.max(0);
        let first = self.own_timeline(&caller, order_id, after).await?;
        let (sender, receiver) = mpsc::channel(8);
        tokio::spawn(watch::follow(
            self.pool.clone(),
            order_id,
            after,
            first,
            news,
            sender,
            self.shutdown.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn rebuild_order_timelines(
        &self,
        request: Request<RebuildOrderTimelinesRequest>,
    ) -> Result<Response<RebuildOrderTimelinesResponse>, Status> {
        let caller = Identity::from_metadata(request.metadata())?;
        if !caller.has_scope(ADMIN_SCOPE) {
            return Err(OrderApiError::NotAdmin.into());
        }
        let rebuilt = timeline::rebuild(&self.pool, &self.kafka)
            .await
            .map_err(OrderApiError::from)?;
        tracing::info!(
            events_read = rebuilt.events_read,
            entries_written = rebuilt.entries_written,
            took_ms = rebuilt.took.as_millis() as u64,
            "order timelines rebuilt"
        );
        Ok(Response::new(RebuildOrderTimelinesResponse {
            events_read: rebuilt.events_read as i64,
            entries_written: rebuilt.entries_written as i64,
            duration_millis: rebuilt.took.as_millis() as i64,
        }))
    }

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        let caller = Identity::from_metadata(request.metadata())?;
        let request = request.into_inner();
        let page = listing::Page::from_request(request.page_size, &request.page_token)
            .map_err(OrderApiError::Invalid)?;
        let (orders, next) = store::list_orders(&self.pool, caller.subject(), &page)
            .await
            .map_err(OrderApiError::from)?;
        Ok(Response::new(ListOrdersResponse {
            orders,
            next_page_token: next.map(|cursor| cursor.token()).unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use shipshape_proto::ERROR_CODE_METADATA;

    use super::*;

    fn answered(error: ResilienceError<Status>) -> Status {
        OrderApiError::Inventory(error.into()).into()
    }

    fn error_code(status: &Status) -> Option<&str> {
        status.metadata().get(ERROR_CODE_METADATA)?.to_str().ok()
    }

    #[test]
    fn every_way_inventory_cannot_price_is_inventory_unavailable() {
        let downstream = "inventory";
        for error in [
            ResilienceError::Timeout { downstream },
            ResilienceError::CircuitOpen { downstream },
            ResilienceError::BulkheadFull { downstream },
            ResilienceError::Inner(Status::unavailable("connection refused")),
        ] {
            let status = answered(error);
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            assert_eq!(error_code(&status), Some("inventory_unavailable"));
        }
    }

    #[test]
    fn the_catalogs_verdict_on_the_request_passes_through() {
        let unknown = error_status(Code::InvalidArgument, "unknown_sku", "SKU-9999 is unknown");
        let status = answered(ResilienceError::Inner(unknown));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(error_code(&status), Some("unknown_sku"));
    }
}
