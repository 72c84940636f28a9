//! Compiles KEDA's `externalscaler.proto` with a pure-Rust protobuf compiler
//! (protox), so neither CI nor developers need a system `protoc`. Server and
//! client stubs are both generated: the client is what the tests (and any
//! operator tooling) use to talk to the scaler exactly as KEDA does.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/externalscaler.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // No `connect()` helper: it needs tonic's `channel` feature, which only
        // the tests enable; they build a Channel and call `new`.
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
