//! The wire contract as pure data: ids, cursors, the ingest XML reader and the
//! poll reply encoder. Nothing here knows about sockets, axum or tokio.

pub mod cursor;
pub mod ids;
pub mod ingest;
pub mod message;
pub mod reply;

pub use cursor::Cursor;
pub use ids::{ChannelName, ClientId};
pub use message::{Command, Payload, Target};
