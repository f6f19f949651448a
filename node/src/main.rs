//! The `stowage` binary.

fn main() -> std::process::ExitCode {
    stowage_node::cli::main()
}
