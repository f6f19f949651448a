//! Integration tests for the `stowage` binary: each module starts real node
//! processes and drives them over HTTP or with real clients.

mod common;

/// Version check, health, routing errors.
mod t10_basics;
/// Write headers, freshness-demanding reads, the access log.
mod t12_headers;
/// Open-files limit and the connection cap.
mod t15_limits;
/// A full disk: 507 for pushes, reads served, start on a full disk, recovery.
mod t16_disk_full;
/// Blob reads, ranges, deletes, monolithic pushes, digest checks.
mod t20_blobs;
/// Upload sessions: chunked PATCHes, status, cancel, mounts, resumption.
mod t30_uploads;
/// Manifests: put/get/delete, validation, negotiation, referrers.
mod t40_manifests;
/// Tag and catalog pagination.
mod t50_listing;
/// Restart with SIGTERM and with SIGKILL mid-upload.
mod t60_restart;
/// The oci-client crate as a real client.
mod t70_oci_client;
/// skopeo copy of a multi-layer image, there and back.
mod t71_skopeo;
/// docker push and pull through the local engine.
mod t72_docker;
/// podman login, push, pull and logout against a checked node.
mod t73_podman;
/// The ORAS Python SDK: login, artifact push (monolithic, chunked) and pull.
mod t74_oras;
/// kill -9 during a stream of pushes loses nothing acknowledged.
mod t80_crash;
/// Users, robots, rules and tokens; the attack cases of access control.
mod t85_auth;
/// HTTPS with `stowage cert` certificates: h2 and HTTP/1.1, skopeo with a
/// cert dir, SIGHUP reload, bad files kept out.
mod t86_tls;
/// A 2 GiB push stays in bounded memory.
mod t90_memory;
/// Backups into a directory and into S3, restored into fresh nodes; the
/// archive's point in time; one repository put back; verify, prune, keys.
mod t95_backup;
/// `stowage copy` between Stowage nodes and a Distribution registry.
mod t96_copy;
