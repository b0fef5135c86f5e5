//! The `disk` store's promises (PROTOCOL.md, "Storage: [store]"), checked
//! against the real binary (`COMETBOX_BIN`, default `target/debug/cometbox`)
//! on its own data directory: SIGKILL under load, damaged journals, the
//! path lock, a full disk and a read-only store.
//!
//! Some tests mount filesystems (a tmpfs, a loop-mounted ext4 image) and so
//! need root; without it they fail, loudly, rather than skip.

mod damage;
mod harness;
mod kill9;
mod lock;
mod space;
