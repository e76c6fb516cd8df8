//! Starts the shipping service, as [`shipshape_shipping::Spec`] declares it.
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shipshape_messaging::service::main::<shipshape_shipping::Spec>().await
}
