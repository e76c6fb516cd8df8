//! The shipping service: schedules a shipment once an order is paid and its
//! destination is one shipping serves, reports a failure otherwise, and
//! calls off shipments of cancelled orders.
#![forbid(unsafe_code)]

pub mod domain;
pub mod events;

use shipshape_messaging::ServiceSpec;
use shipshape_proto::{Role, SHIPPING_ROLE};
use shipshape_runtime::{Wiring, config};
use sqlx::migrate::Migrator;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Served by default: most of Europe and North America. Anything else (say
/// `AQ`, Antarctica) fails shipping, which makes that saga path reachable.
pub const DEFAULT_COUNTRIES: &str = "AT,BE,CA,CH,CZ,DE,DK,ES,FI,FR,GB,IE,IT,LU,NL,NO,PL,PT,SE,US";

/// The shipping service, as `shipshape_messaging::service` runs it: it
/// handles saga events.
pub struct Spec;

/// The shipping service's own settings.
pub struct Config {
    /// `SHIPPING_COUNTRIES`, comma separated (default [`DEFAULT_COUNTRIES`]).
    pub coverage: domain::Coverage,
}

impl ServiceSpec for Spec {
    const ROLE: Role = SHIPPING_ROLE;
    const DEFAULT_OPS_ADDR: &'static str = "0.0.0.0:9104";

    type Config = Config;
    type Handler = events::ShippingEvents;

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    fn config_from_env() -> anyhow::Result<Config> {
        let countries = config::string_or("SHIPPING_COUNTRIES", DEFAULT_COUNTRIES)?;
        Ok(Config {
            coverage: domain::Coverage::parse(&countries)
                .map_err(|e| anyhow::anyhow!("SHIPPING_COUNTRIES: {e}"))?,
        })
    }

    async fn wire(config: Config, wiring: &mut Wiring) -> anyhow::Result<events::ShippingEvents> {
        tracing::info!(ops = %wiring.ops_addr(), "shipping serving");
        Ok(events::ShippingEvents::new(
            wiring.pool().clone(),
            config.coverage,
        ))
    }
}
