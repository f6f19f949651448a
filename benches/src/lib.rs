//! Benchmarks for Stowage: criterion micro benchmarks of the storage engine
//! and `stowage-bench`, a load generator that measures any OCI registry
//! over HTTP.
