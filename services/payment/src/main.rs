//! Starts the payment service, as [`shipshape_payment::Spec`] declares it.
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shipshape_messaging::service::main::<shipshape_payment::Spec>().await
}
