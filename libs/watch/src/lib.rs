//! The public stream of cluster changes, for programs that follow them.
//!
//! The log holds sealed configs, name claims and account events; none of it is public. A
//! [`publisher`] turns each change of a cluster into one public event ([`public`]), with the
//! revision of the log event that made it, and appends it to a stream of its own (`CORRAL_EVENTS`
//! on NATS, a second embedded log otherwise), exactly once. A [`hub`] in each serving process
//! reads that stream and serves watches from it: resumable after any revision still kept,
//! initial events, bookmarks, selectors, and permission checked per event.

pub mod error;
pub mod hub;
pub mod public;
pub mod publisher;

pub use error::WatchError;
pub use hub::{Hub, HubConfig, Rendered, Watch, WatchRequest, Watcher};
