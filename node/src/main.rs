//! The `stowage` binary.

/// glibc's malloc kept freed multi-MiB chunk buffers in up to 16 arenas (one
/// per busy thread), which held a node serving docker's or skopeo's
/// parallel layer pushes and pulls above 200 MiB resident; jemalloc (as
/// TiKV uses it) returns them (benches/README.md, "Memory").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    stowage_node::cli::main()
}
