//! Compiles `proto/*.proto` with a vendored `protoc`, so a fresh machine
//! needs nothing installed beyond the Rust toolchain.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts are single-threaded, so setting the variable
    // cannot race with another reader.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        // Chunk and snapshot pieces are sliced from larger buffers; `Bytes`
        // fields carry those slices without copying them.
        .bytes(".")
        .compile_protos(&["proto/stowage.proto"], &["proto"])?;
    Ok(())
}
