//! Cluster and chaos tests for Stowage. They start real `stowage` processes
//! (and containers where a Docker engine answers), kill, pause and partition
//! them, and check with real clients that nothing acknowledged is lost.
//! They never reach into a node's internals: only its binary, its HTTP API
//! and its data directory as a black box.
