//! Starts the inventory service, as [`shipshape_inventory::Spec`] declares it.
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shipshape_messaging::service::main::<shipshape_inventory::Spec>().await
}
