//! Several real cometbox nodes on one real Redis (`store.kind = "redis"`):
//! cross-node delivery, channel fan-out across nodes, a node SIGKILLed
//! under load, Redis restarted with and without persistence, Redis down and
//! back, polls of one client alternating between nodes, and `/events`
//! streams fed from another node, backend hooks asked on any node. Each
//! scenario runs on one redis-server and on a 3-master Redis Cluster.
//!
//! Needs `redis-server` (Debian's; `tests/cluster/run-tests.sh` installs it)
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
#[path = "../durability/harness.rs"]
mod harness;
mod redis_server;

mod conformance;
mod events;
mod hooks;
mod marker;
mod nodes;
mod scenarios;
mod tls;
