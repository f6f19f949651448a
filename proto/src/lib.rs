//! Wire types for node-to-node RPC: the `.proto` files under `proto/` and the
//! tonic/prost code generated from them. Nothing here knows about the domain
//! types; conversions live in `stowage-node`, at the boundary.

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("stowage.v1");
}
