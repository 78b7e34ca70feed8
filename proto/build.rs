//! Generates Rust types and gRPC stubs from `schema/*.proto` with prost and tonic.
//! The descriptor set is kept in OUT_DIR so tests can check the wire shape.

use std::path::PathBuf;

const SCHEMA_FILES: &[&str] = &[
    "schema/workload.proto",
    "schema/authorization.proto",
    "schema/ca.proto",
    "schema/discovery.proto",
    "schema/zds.proto",
    "schema/waypoint.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    for file in SCHEMA_FILES {
        println!("cargo:rerun-if-changed={file}");
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .file_descriptor_set_path(out_dir.join("mesh_descriptor.bin"))
        .compile_protos(SCHEMA_FILES, &["schema"])?;
    Ok(())
}
