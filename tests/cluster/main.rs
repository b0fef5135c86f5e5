//! Several real cometbox nodes on one real Redis (`store.kind = "redis"`):
//! cross-node delivery, channel fan-out across nodes, a node SIGKILLed
//! under load, Redis restarted with and without persistence, Redis down and
//! back, polls of one client alternating between nodes, and `/events`
//! streams fed from another node, backend hooks asked on any node and
//! their presence notifications decided cluster-wide (`presence.rs`),
//! SIGKILLs of nodes and Redis servers at random moments under load
//! (`chaos.rs`); and the same behind a real nginx with the deploy kit's
//! snippets (`nginx.rs`).
//! The scenarios of `scenarios.rs`, `events.rs` and `hooks.rs` run on one
//! redis-server and on a 3-master Redis Cluster; the store conformance
//! suite (`conformance/`) runs its checks on every store: memory, disk,
//! one redis-server and a Cluster.
//!
//! Needs `redis-server` and `nginx` (Debian's; `tests/cluster/run-tests.sh`
//! installs them)
//! and is built only with `--features redis-tests`, so a plain `cargo test`
//! does not need Redis: `bash tests/cluster/run-tests.sh`.

/// Runs each named scenario (an `async fn(Kind)` of the module) twice: on
/// one redis-server (`<name>::single`) and on a 3-master Redis Cluster
/// (`<name>::cluster`).
#[macro_export]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use $crate::redis_server::Kind;
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn single() {
                    super::$name(Kind::Single).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn cluster() {
                    super::$name(Kind::Cluster).await
                }
            }
        )*
    };
}

#[allow(dead_code)]
#[path = "../shared/bayeux_client.rs"]
mod bayeux_client;
#[allow(dead_code)]
#[path = "../durability/harness.rs"]
mod harness;
#[path = "../shared/ports.rs"]
mod ports;
mod redis_server;

mod bayeux;
mod chaos;
mod conformance;
mod events;
mod hooks;
mod marker;
mod model;
mod nginx;
mod nginx_server;
mod nodes;
mod presence;
mod pusher;
mod scenarios;
mod tls;
mod ws;
