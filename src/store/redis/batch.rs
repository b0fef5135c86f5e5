//! Coalescing of the per-poll scripts: a poll's start, its look after a
//! wake-up and its end.
//!
//! A channel message to 10,000 members wakes 10,000 polls at once; each
//! then looks at its mailbox, answers, and its browser polls again. One
//! script run per poll would make Redis (and, in a cluster, the client's
//! single connection task) pay the per-call overhead 30,000 times per
//! message. So calls of one kind to one slot group are queued, and a drain
//! task sends whatever queued up while its previous run was in flight as one
//! run of at most [`MAX_ITEMS`] items (`each_item` in `prelude.lua`). When
//! the queue is idle a call goes out at once, alone, from its caller's own
//! task: batching adds no wait and no task hop, it only absorbs bursts
//! (group commit).
//!
//! Every item of a run shares its fate: a failed run answers each of its
//! callers with the same error, as each single call would have failed.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::{Args, RedisStore, Reply, Step};
use crate::store::journal::StoreError;

/// Items in one script run: bounds how long one run holds Redis (a few
/// milliseconds at most) and the size of its reply.
pub const MAX_ITEMS: usize = 256;

/// The steps that are batched, in the order of their queues.
const BATCHED: [Step; 3] = [Step::PollOpen, Step::PollRead, Step::PollClose];

/// One queued call and where its reply goes.
struct Item {
    args: Args,
    reply: oneshot::Sender<Result<Reply, StoreError>>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Item>,
    /// Whether a drain task is running for this queue.
    draining: bool,
}

/// The queues: one per batched step and slot group.
pub struct Batches {
    queues: Vec<Mutex<Queue>>,
    groups: usize,
}

impl Batches {
    pub fn new(groups: usize) -> Self {
        Batches {
            queues: (0..BATCHED.len() * groups)
                .map(|_| Mutex::default())
                .collect(),
            groups,
        }
    }

    /// Whether `step` goes through a queue.
    pub fn takes(step: Step) -> bool {
        BATCHED.contains(&step)
    }

    fn queue(&self, step: Step, group: usize) -> &Mutex<Queue> {
        let kind = BATCHED
            .iter()
            .position(|s| *s == step)
            .expect("a batched step");
        &self.queues[kind * self.groups + group]
    }
}

impl RedisStore {
    /// Runs one item of a batched `step` in `group`: queued, and sent with
    /// the others queued meanwhile.
    pub(super) async fn run_batched(
        &self,
        step: Step,
        group: usize,
        args: Args,
    ) -> Result<Reply, StoreError> {
        let (reply, replied) = oneshot::channel();
        let idle = {
            let mut queue = lock(self.batches.queue(step, group));
            if queue.draining {
                queue.waiting.push(Item { args, reply });
                None
            } else {
                queue.draining = true;
                Some(args)
            }
        };
        if let Some(args) = idle {
            // The queue was idle: this call goes out at once, from this
            // task (no hand-over to a drain task and back), and what
            // queues meanwhile follows it (`Handover`).
            let _handover = Handover {
                store: self,
                step,
                group,
            };
            let mut replies = self.send_run(step, group, vec![args]).await?;
            return Ok(replies.pop().expect("one reply to a run of one"));
        }
        replied.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "redis: the batch was dropped".into(),
            ))
        })
    }

    /// Sends the queue's items, a run at a time, until it is empty.
    async fn drain(self: Arc<Self>, step: Step, group: usize) {
        loop {
            let items: Vec<Item> = {
                let mut queue = lock(self.batches.queue(step, group));
                if queue.waiting.is_empty() {
                    queue.draining = false;
                    return;
                }
                let take = queue.waiting.len().min(MAX_ITEMS);
                queue.waiting.drain(..take).collect()
            };
            let (args, replies): (Vec<Args>, Vec<_>) = items
                .into_iter()
                .map(|item| (item.args, item.reply))
                .unzip();
            match self.send_run(step, group, args).await {
                Ok(values) => {
                    for (value, reply) in values.into_iter().zip(replies) {
                        let _ = reply.send(Ok(value));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    /// One script run of `items` (`each_item` in `prelude.lua`: the count,
    /// then each item's argument count and arguments); their replies, one
    /// per item, in order.
    async fn send_run(
        &self,
        step: Step,
        group: usize,
        items: Vec<Args>,
    ) -> Result<Vec<Reply>, StoreError> {
        let count = items.len();
        let mut args: Args =
            Vec::with_capacity(1 + items.iter().map(|a| 1 + a.len()).sum::<usize>());
        args.push(count.to_string().into_bytes());
        for item in items {
            args.push(item.len().to_string().into_bytes());
            args.extend(item);
        }
        let Reply(values) = self.run_unbatched(step, group, args).await?;
        if values.len() != count {
            return Err(super::unexpected_reply(format!(
                "{} replies to a batch of {count}",
                values.len()
            )));
        }
        Ok(values.into_iter().map(Reply::from).collect())
    }
}

/// Marks the end of a call sent from its caller's task (finished or
/// dropped mid-way): the items queued meanwhile go to a drain task, or the
/// queue is idle again.
struct Handover<'a> {
    store: &'a RedisStore,
    step: Step,
    group: usize,
}

impl Drop for Handover<'_> {
    fn drop(&mut self) {
        let mut queue = lock(self.store.batches.queue(self.step, self.group));
        if queue.waiting.is_empty() {
            queue.draining = false;
            return;
        }
        drop(queue);
        // A task of its own: the callers waiting in the queue may be
        // dropped (their browsers left) while others ride in the same run.
        let runtime = tokio::runtime::Handle::try_current();
        match (self.store.me.upgrade(), runtime) {
            (Some(store), Ok(runtime)) => {
                runtime.spawn(store.drain(self.step, self.group));
            }
            // The store (or the process) is going away: the waiting
            // callers get an error.
            _ => lock(self.store.batches.queue(self.step, self.group))
                .waiting
                .clear(),
        }
    }
}

fn lock(queue: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(|e| e.into_inner())
}
