//! Starts the order service, as [`shipshape_order::Spec`] declares it.
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shipshape_messaging::service::main::<shipshape_order::Spec>().await
}
