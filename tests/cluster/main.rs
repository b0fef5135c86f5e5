//! Several real cometbox nodes on one real Redis (`store.kind = "redis"`):
//! cross-node delivery, channel fan-out across nodes, a node SIGKILLed
//! under load, Redis restarted with and without persistence, Redis down and
//! back, polls of one client alternating between nodes, and `/events`
//! streams fed from another node, backend hooks asked on any node and
//! their presence notifications decided cluster-wide (`presence.rs`); and
//! the same behind a real nginx with the deploy kit's snippets (`nginx.rs`).
//!
//! Needs `redis-server` and `nginx` (Debian's; `tests/cluster/run-tests.sh`
//! installs them)
//! and is built only with `--features redis-tests`, so a plain `cargo test`
//! does not need Redis: `bash tests/cluster/run-tests.sh`.

#[allow(dead_code)]
#[path = "../durability/harness.rs"]
mod harness;
mod redis_server;

mod events;
mod hooks;
mod nginx;
mod nginx_server;
mod nodes;
mod presence;
mod scenarios;
