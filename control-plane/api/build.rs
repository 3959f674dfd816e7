use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "../proto/ndc/kv/v1/kv.proto",
        "../proto/ndc/cluster/v1/cluster.proto",
        "../proto/ndc/raft/v1/raft.proto",
        "../proto/ndc/tenants/v1/tenants.proto",
        "../proto/ndc/inventory/v1/inventory.proto",
        "../proto/ndc/claims/v1/claims.proto",
        "../proto/ndc/catalog/v1/catalog.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("ndc_descriptor.bin"))
        .compile_protos(&protos, &["../proto"])?;
    Ok(())
}
