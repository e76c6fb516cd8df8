//! `cargo xtask certs`: a development CA and a certificate for each gRPC
//! peer (gateway, order, inventory), for Compose and for running the
//! services by hand; `cargo xtask up` and the tests make their own.

use std::path::PathBuf;
use std::process::ExitCode;

use shipshape_testkit::pki::{GRPC_PEERS, Pki};

/// Where the files go.
#[derive(Debug, PartialEq, clap::Args)]
pub struct Args {
    /// The folder to write ca.crt and <peer>.crt, <peer>.key into
    /// [default: .shipshape/tls in the workspace]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = match args.dir {
        Some(dir) => dir,
        None => crate::workspace::Workspace::load()
            .await?
            .root
            .join(".shipshape/tls"),
    };
    let pki = Pki::create(&dir, "Shipshape development CA")?;
    println!(
        "a new development CA and certificates in {}:",
        dir.display()
    );
    println!("  CA             {}", pki.ca_path().display());
    for peer in GRPC_PEERS {
        println!(
            "  {peer:<14} {} {}",
            pki.certificate_path(peer).display(),
            pki.key_path(peer).display()
        );
    }
    println!(
        "Give each process GRPC_TLS_CERT, GRPC_TLS_KEY and GRPC_TLS_CA (see docs/security.md)."
    );
    Ok(ExitCode::SUCCESS)
}
