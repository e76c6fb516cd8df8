//! Generates Rust types for every `.proto` under the workspace's `proto/`.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "shipshape/common/v1/common.proto",
    "shipshape/inventory/v1/inventory.proto",
    "shipshape/order/v1/order.proto",
    "shipshape/events/v1/events.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    // The descriptors of every file, for the servers' gRPC reflection.
    let descriptors = PathBuf::from(std::env::var("OUT_DIR")?).join("descriptors.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(descriptors)
        .compile_protos(&files, &[root])?;
    Ok(())
}
