//! Generates Rust types for every `.proto` under the workspace's `proto/`.
//!
//! The files are parsed by `protox`, a protobuf compiler written in Rust, so
//! a fresh machine builds the workspace with Rust alone (no `protoc`).

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "shipshape/common/v1/common.proto",
    "shipshape/inventory/v1/inventory.proto",
    "shipshape/order/v1/order.proto",
    "shipshape/events/v1/events.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it is compiled: clones in other
    // folders that share a target directory reuse the compiled script, and
    // a path baked into it named a clone that was gone.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&root])?;
    // The descriptors of every file, for the servers' gRPC reflection.
    let descriptors_path = PathBuf::from(std::env::var("OUT_DIR")?).join("descriptors.bin");
    std::fs::write(descriptors_path, descriptors.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
