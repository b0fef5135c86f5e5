//! The `disk` store's promises (docs/storage.md), checked
//! against the real binary on its own data directory: SIGKILL under load
//! (`kill9`), damaged journals (`damage`), the path lock (`lock`), a full
//! disk and a read-only store (`space`), and a checked-in store of an
//! earlier version recovered whole (`fixture`).
//!
//! ```sh
//! cargo test --test durability                         # about 30-40 s
//! DURABILITY_CYCLES=200 DURABILITY_BUDGET_SECS=900 cargo test --test durability kill9
//! DURABILITY_SEED=1234 cargo test --test durability kill9   # replay a run's choices
//! DURABILITY_STORE=memory cargo test --test durability kill9  # harness self-check, no kills
//! COMETBOX_BIN=target/release/cometbox cargo test --test durability
//! ```
//!
//! `space` mounts a tmpfs and loop-mounts an ext4 image (unmounted again by
//! a guard, also on failure), so it needs root, `mount`, `mkfs.ext4` and
//! `chattr`; without them it fails, loudly, rather than skips.

mod damage;
mod fixture;
mod harness;
mod kill9;
mod lock;
mod space;
