//! The store conformance suite (issue #23): the specification every store
//! is held to, as a backend and a browser see it through the real binary.
//! One body of checks, each an `async fn(Fixture)`, runs unchanged against
//! every store: memory, disk, one Redis server and a 3-master Redis
//! Cluster, and the disk store twice more, stopped cleanly or SIGKILLed
//! and reopened at each of a check's checkpoints ([`fixture`]). Each pair
//! is its own test, `conformance::<check>::<store>`, so a failure names
//! both.
//!
//! - `cursors`: ids strictly increase (parsed); every cursor resumes with
//!   exactly what follows; `since=now`; the `max_reply_bytes` budget.
//! - `loss`: `reset` on retention, `message_ttl`, a new epoch (disconnect,
//!   another mailbox's cursor), idle eviction; not on a message's own
//!   `ttl`. Store-specific losses live elsewhere (listed there).
//! - `batches`: a batch a limit refuses part-way applies nothing anywhere,
//!   over several slot groups (the Cluster's `check`/`force` path).
//! - `channels`: fan-out, `/chat/*` and `/chat/**` reaching each member
//!   once, a backend `<unsubscribe>` against older and newer grants.
//! - `figures`: presence and `/stats` after a known sequence.
//! - `durability`: a clean restart, and a SIGKILL at a random moment of a
//!   write load.
//! - `hooks`: the notification queue's `max_pending` bound.
//! - `pusher`: a Pusher HTTP API event's `socket_id` kept as `exclude`.
//!
//! Redis's `appendfsync` handling is checked by
//! `scenarios::redis_restart_with_and_without_persistence`, a payload or
//! history Redis lost by `marker.rs`: both are about Redis alone.
//!
//! (`src/store/conformance.rs` checks the per-mailbox seam the memory and
//! disk stores share, below the hub; these checks hold every store to the
//! same behaviour from outside.)
//!
//! ```sh
//! bash tests/cluster/run-tests.sh conformance
//! cargo test --features redis-tests --test cluster -- conformance::wildcards   # one check, every store
//! cargo test --features redis-tests --test cluster -- conformance:: disk_killed # one store, every check
//! ```

mod batches;
mod channels;
mod cursors;
mod durability;
mod figures;
mod fixture;
mod hooks;
mod looks;
mod loss;
mod pusher;

use fixture::{Fixture, Store};

/// Runs `check` on the store its test is named after.
async fn run<F: std::future::Future<Output = ()>>(
    store: &str,
    check: &str,
    body: impl FnOnce(Fixture) -> F,
) {
    body(Fixture::new(Store::named(store), check).await).await
}

/// One test per check and store: `module::check;` runs on every store;
/// `module::check [stores];` on those listed, each with its own attributes
/// (an `#[ignore = "…"]` for a known failure, issue #23). A check without
/// checkpoints (it restarts the node itself, or has nothing to keep) lists
/// the four stores: the reopening variants would only repeat `disk`.
macro_rules! conformance {
    () => {};
    ($module:ident :: $check:ident; $($rest:tt)*) => {
        conformance!(@tests $module $check [memory disk disk_reopened disk_killed redis redis_cluster]);
        conformance!($($rest)*);
    };
    ($module:ident :: $check:ident [$($stores:tt)*]; $($rest:tt)*) => {
        conformance!(@tests $module $check [$($stores)*]);
        conformance!($($rest)*);
    };
    (@tests $module:ident $check:ident [$($(#[$attr:meta])* $store:ident)*]) => {
        mod $check {
            $(
                $(#[$attr])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $store() {
                    super::run(stringify!($store), stringify!($check), super::$module::$check).await
                }
            )*
        }
    };
}

conformance! {
    cursors::ids_increase_and_every_cursor_resumes_exactly;
    cursors::since_now_carries_only_what_follows;
    cursors::replies_stop_at_the_byte_budget;
    loss::overflow_drops_the_oldest_and_resets_older_cursors;
    loss::a_cursor_of_another_mailbox_resets;
    loss::a_disconnected_mailbox_comes_back_in_a_new_epoch;
    loss::message_ttl_resets_but_an_own_ttl_does_not;
    loss::an_evicted_client_comes_back_in_a_new_mailbox;
    batches::a_batch_over_max_clients_applies_nothing;
    batches::a_batch_over_max_channels_applies_nothing;
    channels::a_channel_reaches_its_members_at_the_time;
    channels::wildcards_reach_each_member_once;
    channels::an_unsubscribe_stands_against_older_grants;
    figures::presence_and_stats_follow_a_known_sequence;
    durability::a_clean_restart_keeps_what_the_store_promises [memory disk redis redis_cluster];
    durability::a_kill_under_write_load_loses_nothing_acknowledged [memory disk redis redis_cluster];
    hooks::the_hook_queue_is_bounded_and_drops_whole_pairs [memory disk redis redis_cluster];
    pusher::a_pusher_event_keeps_its_exclude;
}

/// The checks' own slot-group arithmetic agrees with Redis Cluster's
/// documented slots (`CLUSTER KEYSLOT foo` = 12182, `bar` = 5061).
#[test]
fn slot_groups_follow_redis_clusters_slots() {
    assert_eq!(looks::slot_group("foo"), 12182 * 16 / 16384);
    assert_eq!(looks::slot_group("bar"), 5061 * 16 / 16384);
    assert_eq!(looks::spread("m", 16).len(), 16);
    let together = looks::together("cap", 4);
    assert!(together
        .iter()
        .all(|c| looks::slot_group(c) == looks::slot_group(&together[0])));
}
