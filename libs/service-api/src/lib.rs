//! The services' interfaces as their callers see them, the same in-process and over NATS:
//! commands to the registry, queries of the clusters (a registry replica or a local view), and
//! credential rotation (the auth-rotation service). [`nats`] holds their clients, servers and
//! subjects.

mod api;
pub mod nats;

pub use api::{ClusterCommands, ClusterQueries, CredentialRotation, error_reply, to_reply, wire_code, wire_error};
