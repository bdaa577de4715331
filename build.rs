//! Generates the gRPC server and client code from `proto/v1alpha1/service.proto` with protox (no system protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/v1alpha1/service.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
