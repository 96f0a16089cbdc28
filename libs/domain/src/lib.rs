//! The cluster aggregate: commands, validation, events and their fold, with no I/O.
//!
//! In the style of cqrs-es: [`decide`] holds every business rule and turns a command into
//! events (or an error) given the current state; [`apply`] only folds an event into the state.
//! The aggregate state is `Option<ClusterState>`, `None` meaning "not registered" or "deleted".
//!
//! Behaviour follows Argo CD's `server/cluster` service: an identical create is a no-op, a
//! different one needs `upsert`, an update with `updatedFields` only copies the listed fields.

mod aggregate;
mod error;
mod ids;
mod spec;
mod validate;

pub use aggregate::{ClusterCommand, ClusterEvent, ClusterState, SPEC_IS_DIFFERENT, UPDATABLE_FIELDS, apply, decide};
pub use error::DomainError;
pub use ids::{CLUSTER_ID_NAMESPACE, CLUSTER_NAME_NAMESPACE, cluster_id, name_key, unescape_name};
pub use spec::{ClusterSpec, IN_CLUSTER_NAME, IN_CLUSTER_SERVER, in_cluster_spec};
pub use validate::{MAX_SERVER_LEN, validate};
