//! The hub on the `redis` store: every node configured with one Redis acts
//! as one server.
//!
//! The truth (mailboxes, ids, memberships, poll counts, idle clocks) is in
//! Redis and every change is one Lua script in one slot group, so a batch's
//! share in a group, its ids and its wake-up hint are one atomic step
//! (`src/store/redis/`). With one server there is one group; in a Redis
//! Cluster a batch is split by group (a channel message goes to every
//! group, each appending to its own members) and the shares run
//! concurrently; figures are added up over the groups. A node keeps only
//! its own waiting polls, each woken by a hint and then reading Redis again.
//! The memory and disk paths never come here: [`Hub::apply`],
//! [`Hub::open_for`] and [`Hub::wait`] (so `/poll` and `/events` alike)
//! branch once, at their top. What the scripts read is handed back as a
//! [`ReadOutcome`], so the public port encodes it as for any store.

use std::pin::pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::poll::{Open, OpenPoll, PollError, PollRequest, Waited};
use super::stats::{Presence, Stats, StatsScope};
use super::{ApplyError, Hub};
use crate::protocol::reply::{self, MAX_ENTRY_OVERHEAD};
use crate::protocol::{ClientId, Command, Cursor, Target};
use crate::store::journal::StoreError;
use crate::store::redis::{unexpected_reply, unix_ms, Args, LocalClient, RedisStore, Reply, Step};
use crate::store::{ReadOutcome, StoredMessage};

/// How an apply script treats its limits (`apply.lua`).
#[derive(Clone, Copy)]
enum ApplyMode {
    /// Checks, then applies all of the share or nothing.
    Apply,
    /// Checks only: applies nothing.
    Check,
    /// Applies without checking (every share was checked just before).
    Force,
}

impl ApplyMode {
    fn word(self) -> &'static str {
        match self {
            ApplyMode::Apply => "apply",
            ApplyMode::Check => "check",
            ApplyMode::Force => "force",
        }
    }
}

/// A batch some of whose shares Redis took while others failed: which
/// commands (1-based, as ingest numbers them) are applied in full, and which
/// channel messages reached the members in some groups only.
fn partly_applied(homes: &[Option<usize>], failed: &[usize], cause: StoreError) -> ApplyError {
    let (mut applied, mut partly) = (Vec::new(), Vec::new());
    for (i, home) in homes.iter().enumerate() {
        match home {
            Some(g) if !failed.contains(g) => applied.push(i + 1),
            Some(_) => {}
            None => partly.push(i + 1),
        }
    }
    ApplyError::PartlyApplied {
        applied,
        partly,
        cause,
    }
}

/// A lease outlives its poll's timeout by this much before Redis stops
/// counting it (a node killed with polls open).
const LEASE_GRACE: Duration = Duration::from_secs(30);

/// Clients one eviction script looks at, so Redis is never held long.
const REAP_BATCH: usize = 500;

/// A poll open on this node: counted in Redis (a lease) and here (a
/// waiter) until its reply is written.
pub(super) struct RemotePoll {
    store: Arc<RedisStore>,
    client: ClientId,
    lease: String,
    /// Whether Redis may hold the lease: from the moment the start script
    /// is sent (a cancelled call may still have run it) until it refused.
    /// A drop then ends the lease rather than leave it for timeout + 30 s.
    lease_sent: bool,
    /// Whether this node counts the poll as open (`/stats` `open_polls`):
    /// only once the start script ran, so the poll is subscribed to its
    /// channels and will be woken by the next message for it.
    counted: bool,
    local: Arc<LocalClient>,
    /// The start script's look, and the `since` it looked after: the
    /// first [`Hub::wait`] with that `since` answers with it (no second
    /// round trip).
    first: Mutex<Option<(Option<Cursor>, Waited)>>,
    /// `local.woken` before the start script looked: a hint after that
    /// look came before the first wait could listen, so that wait looks
    /// again instead of sleeping through it.
    woken_before: u64,
}

impl RemotePoll {
    /// The mailbox's head as the start script saw it (when it read
    /// nothing: `since=now`).
    pub(super) fn head_at_open(&self) -> Option<Cursor> {
        let first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        match first.as_ref()? {
            (None, Waited::Nothing(head)) => Some(*head),
            _ => None,
        }
    }
}

impl Drop for RemotePoll {
    fn drop(&mut self) {
        if self.counted {
            self.local.uncount_open();
        }
        self.store.waiters.leave(&self.client);
        if !self.lease_sent {
            return;
        }
        let group = self.store.groups().of(self.client.as_str());
        let (store, args) = (
            self.store.clone(),
            vec![
                self.client.as_str().into(),
                std::mem::take(&mut self.lease).into_bytes(),
            ],
        );
        // Without a runtime (process exit) the lease lapses by itself.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = store.run(Step::PollClose, group, args).await;
            });
        }
    }
}

/// What one look at a mailbox found, as a wait on any store says it.
fn decode_read(reply: &Reply, since: Option<Cursor>) -> Waited {
    if reply.text(0) != "ok" {
        // The mailbox is gone (disconnected). The since cursor (if any) is
        // where a new mailbox would answer `reset` anyway.
        return Waited::Disconnected(since.unwrap_or(Cursor { epoch: 0, seq: 0 }));
    }
    let epoch = reply.int(1) as u32;
    let cursor = Cursor {
        epoch,
        seq: reply.int(2) as u64,
    };
    let reset = reply.int(3) == 1;
    // Only `json_tail` is read from here on: Redis already left out what
    // expired, so the clock fields are placeholders.
    let now = Instant::now();
    let messages: Vec<_> = (4..reply.len())
        .step_by(2)
        .map(|i| {
            let message = StoredMessage {
                json_tail: reply.text(i + 1).into_boxed_str(),
                expires_at: now,
                own_ttl: false,
            };
            (reply.int(i) as u64, Arc::new(message))
        })
        .collect();
    if messages.is_empty() && !reset {
        Waited::Nothing(cursor)
    } else {
        Waited::Read(ReadOutcome {
            messages,
            cursor,
            reset,
        })
    }
}

fn read_args(since: Option<Cursor>, max_bytes: usize) -> Args {
    let (has, epoch, seq) = match since {
        Some(c) => ("1", c.epoch, c.seq),
        None => ("0", 0, 0),
    };
    vec![
        has.into(),
        epoch.to_string().into(),
        seq.to_string().into(),
        max_bytes.to_string().into(),
        MAX_ENTRY_OVERHEAD.to_string().into(),
    ]
}

/// When a lease held for `timeout` from now lapses by itself.
fn lease_deadline(timeout: Duration) -> String {
    (unix_ms() + (timeout + LEASE_GRACE).as_millis() as u64).to_string()
}

impl Hub {
    fn redis(&self) -> Option<&Arc<RedisStore>> {
        self.0.redis.as_ref()
    }

    /// [`Hub::apply`] on Redis: the batch's share in each slot group is
    /// one script (the whole batch with one server); the shares run
    /// concurrently. `<ok>` only once every share is applied.
    ///
    /// A share's script checks its limits and applies all of it or nothing.
    /// With several shares a limit could refuse one after others applied,
    /// so when a batch spans several groups and any share could be refused
    /// (it creates clients or subscribes), the shares that could be are
    /// checked first (`check`) and then every share is applied without
    /// checking again (`force`): a refusal then applies nothing. A share Redis fails to take (a master down: `503`) while
    /// others applied is answered as what it is: [`ApplyError::PartlyApplied`]
    /// names the commands applied, never "nothing".
    pub(super) async fn apply_remote(
        &self,
        redis: &RedisStore,
        commands: Vec<Command>,
    ) -> Result<usize, ApplyError> {
        let accepted = commands.len();
        let now_ms = unix_ms();
        let groups = redis.groups();
        let mut shares: Vec<Args> = vec![Vec::new(); groups.len()];
        let mut refusable = vec![false; groups.len()];
        // Each command's group (`None`: a channel message, in every group).
        let mut homes: Vec<Option<usize>> = Vec::with_capacity(accepted);
        let mut messages = 0;
        for command in commands {
            let may_refuse = matches!(
                &command,
                Command::Message {
                    target: Target::Client(_),
                    ..
                } | Command::Subscribe { .. }
            );
            let (words, client) = self.encode(command, now_ms);
            messages += usize::from(words[0] == b"m");
            match client {
                Some(id) => {
                    let g = groups.of(id.as_str());
                    refusable[g] |= may_refuse;
                    shares[g].extend(words);
                    homes.push(Some(g));
                }
                // A channel message: each group appends to its members.
                None => {
                    for share in &mut shares {
                        share.extend(words.iter().cloned());
                    }
                    homes.push(None);
                }
            }
        }
        let shares: Vec<(usize, Args)> = shares
            .into_iter()
            .enumerate()
            .filter(|(_, share)| !share.is_empty())
            .collect();
        let mode = if shares.len() > 1 && refusable.iter().any(|r| *r) {
            let checks = shares.iter().filter(|(g, _)| refusable[*g]);
            let checked = self.run_shares(redis, ApplyMode::Check, checks).await?;
            for reply in checked {
                self.refusal(&reply?)?;
            }
            ApplyMode::Force
        } else {
            ApplyMode::Apply
        };
        let replies = self.run_shares(redis, mode, shares.iter()).await?;
        // A share Redis did not take answers first (503), then a refusal.
        let mut failed = Vec::new();
        let mut first_error = None;
        let mut refused = None;
        for ((g, _), reply) in shares.iter().zip(replies) {
            match reply {
                Ok(reply) => {
                    if let Err(refusal) = self.refusal(&reply) {
                        refused.get_or_insert(refusal);
                    }
                }
                Err(e) => {
                    failed.push(*g);
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            if failed.len() == shares.len() {
                return Err(ApplyError::Storage(e));
            }
            return Err(partly_applied(&homes, &failed, e));
        }
        if let Some(refusal) = refused {
            return Err(refusal);
        }
        self.0.messages_in.fetch_add(messages as u64, Relaxed);
        Ok(accepted)
    }

    /// Runs the apply script on each share concurrently.
    async fn run_shares<'a>(
        &self,
        redis: &RedisStore,
        mode: ApplyMode,
        shares: impl Iterator<Item = &'a (usize, Args)>,
    ) -> Result<Vec<Result<Reply, StoreError>>, ApplyError> {
        let limits = &self.0.limits;
        let counts = redis.client_counts(limits.max_clients).await?;
        let secs = (unix_ms() / 1000).to_string();
        let runs = shares.map(|(g, share)| {
            let mut args: Args = vec![
                limits_arg(redis.max_messages()),
                limits_arg(limits.max_clients),
                limits_arg(limits.max_channels_per_client),
                secs.clone().into(),
                counts.others(*g),
                mode.word().into(),
            ];
            args.extend(share.iter().cloned());
            redis.run(Step::Apply, *g, args)
        });
        Ok(futures_util::future::join_all(runs).await)
    }

    /// A share's reply: `ok`, or the limit that refused it.
    fn refusal(&self, reply: &Reply) -> Result<(), ApplyError> {
        let limits = &self.0.limits;
        match reply.text(0).as_str() {
            "ok" => Ok(()),
            "too-many-clients" => Err(ApplyError::TooManyClients {
                new: reply.int(1) as usize,
                max: limits.max_clients,
            }),
            "too-many-channels" => {
                let client = ClientId::parse(&reply.text(1)).map_err(unexpected_reply)?;
                Err(ApplyError::TooManyChannels {
                    client,
                    max: limits.max_channels_per_client,
                })
            }
            other => Err(unexpected_reply(other).into()),
        }
    }

    /// One command as the batch script reads it, and the client it is for
    /// (`None`: a channel message).
    fn encode(&self, command: Command, now_ms: u64) -> (Args, Option<ClientId>) {
        let limits = &self.0.limits;
        match command {
            Command::Message {
                target,
                event,
                payload,
                ttl,
            } => {
                let (kind, name, channel) = match &target {
                    Target::Client(id) => ("c", id.as_str(), None),
                    Target::Channel(c) => ("h", c.as_str(), Some(c)),
                };
                let tail = reply::message_tail(channel, event.as_deref(), &payload, now_ms);
                let own = ttl.is_some_and(|t| t < limits.message_ttl);
                let lifetime = ttl.map_or(limits.message_ttl, |t| t.min(limits.message_ttl));
                let words = vec![
                    "m".into(),
                    kind.into(),
                    name.into(),
                    (now_ms + lifetime.as_millis() as u64).to_string().into(),
                    if own { "1" } else { "0" }.into(),
                    String::from(tail).into_bytes(),
                ];
                let client = match target {
                    Target::Client(id) => Some(id),
                    Target::Channel(_) => None,
                };
                (words, client)
            }
            Command::Subscribe { client, channel } => (
                vec!["s".into(), client.as_str().into(), channel.as_str().into()],
                Some(client),
            ),
            Command::Unsubscribe { client, channel } => (
                vec!["u".into(), client.as_str().into(), channel.as_str().into()],
                Some(client),
            ),
            Command::Leave { client, channel } => (
                vec!["l".into(), client.as_str().into(), channel.as_str().into()],
                Some(client),
            ),
            Command::Disconnect { client } => {
                (vec!["d".into(), client.as_str().into()], Some(client))
            }
        }
    }

    /// [`Hub::unread_from`] on Redis: the mailbox's delivered mark.
    pub(super) async fn unread_from_remote(&self, open: &RemotePoll) -> Result<Cursor, StoreError> {
        let group = open.store.groups().of(open.client.as_str());
        let args = vec![open.client.as_str().into()];
        let reply = open.store.run(Step::UnreadFrom, group, args).await?;
        Ok(match reply.text(0).as_str() {
            "ok" => Cursor {
                epoch: reply.int(1) as u32,
                seq: reply.int(2) as u64,
            },
            // Gone since the poll opened: a new mailbox starts empty.
            _ => Cursor { epoch: 0, seq: 0 },
        })
    }

    /// [`Hub::open_for`] on Redis: with hooks, `connect` and `subscribe`
    /// asked first; then a script starts the poll (its lease) and looks.
    pub(super) async fn open_remote(
        &self,
        redis: &Arc<RedisStore>,
        request: &PollRequest,
    ) -> Result<OpenPoll, PollError> {
        if let Some(hooks) = &self.0.hooks {
            self.ask_remote(hooks, redis, request).await?;
        }
        let limits = &self.0.limits;
        let timeout = request
            .timeout
            .map_or(limits.poll_timeout, |t| t.min(limits.max_poll_timeout));
        let mut open = RemotePoll {
            store: redis.clone(),
            lease: format!("{}:{:016x}", redis.node(), rand::random::<u64>()),
            local: redis.waiters.join(&request.client),
            client: request.client.clone(),
            lease_sent: true,
            counted: false,
            first: Mutex::new(None),
            woken_before: 0,
        };
        open.woken_before = open.local.woken.load(std::sync::atomic::Ordering::SeqCst);
        let reply = match self.start_poll(redis, request, &open.lease, timeout).await {
            Ok(reply) => reply,
            Err(refused) => {
                // A refusal took no lease; a failed call may have.
                open.lease_sent = matches!(refused, PollError::Storage(_));
                return Err(refused);
            }
        };
        open.local.count_open();
        open.counted = true;
        *open.first.get_mut().unwrap_or_else(|e| e.into_inner()) =
            Some((request.since, decode_read(&reply, request.since)));
        self.0.polls_total.fetch_add(1, Relaxed);
        Ok(OpenPoll(Open::Remote(Box::new(open))))
    }

    /// [`Hub::wait`] on Redis: the start script's look if it is the one
    /// asked for, else a script looks; then a wait for a hint (or the
    /// timeout), and a look again after each hint. Each look renews the
    /// lease, so a long stream stays counted.
    pub(super) async fn wait_remote(
        &self,
        open: &RemotePoll,
        since: Option<Cursor>,
        timeout: Duration,
    ) -> Waited {
        let limits = &self.0.limits;
        let sleep = tokio::time::sleep(timeout);
        tokio::pin!(sleep);
        let mut first = open
            .first
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .filter(|(looked_after, _)| *looked_after == since)
            .map(|(_, waited)| waited);
        let waited = loop {
            // Registered before looking, so a hint published between the
            // look and the wait is never missed.
            let mut notified = pin!(open.local.wake.notified());
            notified.as_mut().enable();
            let waited = match first.take() {
                // The start script looked before anything listened here: if
                // a hint came since, look again rather than sleep through it.
                Some(Waited::Nothing(_))
                    if open.local.woken.load(std::sync::atomic::Ordering::SeqCst)
                        != open.woken_before =>
                {
                    continue;
                }
                Some(waited) => waited,
                None => {
                    let mut args: Args = vec![open.client.as_str().into()];
                    args.extend(read_args(since, limits.max_reply_bytes));
                    args.extend([open.lease.as_str().into(), lease_deadline(timeout).into()]);
                    let group = open.store.groups().of(open.client.as_str());
                    match open.store.run(Step::PollRead, group, args).await {
                        Ok(reply) => decode_read(&reply, since),
                        // Logged by the store.
                        Err(e) => break Waited::Failed(e),
                    }
                }
            };
            match waited {
                Waited::Nothing(head) if !self.is_shutting_down() => {
                    tokio::select! {
                        _ = notified => continue,
                        _ = &mut sleep => break Waited::Nothing(head),
                    }
                }
                said => break said,
            }
        };
        if let Waited::Read(outcome) = &waited {
            self.0
                .messages_out
                .fetch_add(outcome.messages.len() as u64, Relaxed);
        }
        waited
    }

    /// The poll-start script: mailbox, lease, `channels=`, first look.
    async fn start_poll(
        &self,
        redis: &RedisStore,
        request: &PollRequest,
        lease: &str,
        timeout: Duration,
    ) -> Result<Reply, PollError> {
        let limits = &self.0.limits;
        let mut args: Args = vec![
            request.client.as_str().into(),
            lease.into(),
            lease_deadline(timeout).into(),
            limits.max_polls_per_client.to_string().into(),
            limits_arg(limits.max_clients),
            limits_arg(limits.max_channels_per_client),
            request
                .issued_at
                .map_or(String::new(), |iat| iat.to_string())
                .into(),
        ];
        // A byte budget of 0: the script opens without reading (and
        // answers the head, where `since=now` starts).
        let budget = if request.open_only || request.from_now {
            0
        } else {
            limits.max_reply_bytes
        };
        args.extend(read_args(request.since, budget));
        let group = redis.groups().of(request.client.as_str());
        args.push(redis.client_counts(limits.max_clients).await?.others(group));
        args.extend(request.subscribe.iter().map(|c| c.as_str().into()));
        let reply = redis.run(Step::PollOpen, group, args).await?;
        match reply.text(0).as_str() {
            "ok" | "gone" => Ok(reply),
            "too-many-clients" => Err(PollError::TooManyClients(limits.max_clients)),
            "too-many-polls" => Err(PollError::TooManyPolls(reply.int(1) as u32)),
            "too-many-channels" => Err(PollError::TooManyChannels(limits.max_channels_per_client)),
            other => Err(unexpected_reply(other).into()),
        }
    }

    /// `/stats` on Redis: this node's counters and the cluster's figures,
    /// added up over the slot groups (a channel with members in several
    /// groups counted once; the node heartbeats are the first group's).
    pub(super) async fn stats_remote(&self, redis: &RedisStore) -> Result<Stats, StoreError> {
        let gone_after = node_gone_after(self.0.limits.client_idle_timeout);
        let several = redis.groups().len() > 1;
        let runs = (0..redis.groups().len()).map(|g| {
            let args: Args = vec![
                gone_after.as_millis().to_string().into(),
                if several { "1" } else { "0" }.into(),
            ];
            redis.run(Step::Stats, g, args)
        });
        let mut sums = [0u64; 6];
        let mut channels = std::collections::HashSet::new();
        let mut nodes = 0;
        let mut hooks_dropped = 0;
        for (g, reply) in futures_util::future::join_all(runs)
            .await
            .into_iter()
            .enumerate()
        {
            let reply = reply?;
            for (i, sum) in sums.iter_mut().enumerate() {
                *sum += reply.int(i).max(0) as u64;
            }
            if g == 0 {
                nodes = reply.int(6).max(0) as u64;
            }
            hooks_dropped += reply.int(7).max(0) as u64;
            channels.extend((8..reply.len()).map(|i| reply.text(i)));
        }
        let [clients, channel_count, subscriptions, queued, lost, evicted] = sums;
        Ok(Stats {
            clients: clients as usize,
            open_polls: redis.waiters.open_polls(),
            queued_messages: queued,
            messages_in: self.0.messages_in.load(Relaxed),
            messages_out: self.0.messages_out.load(Relaxed),
            messages_lost: lost,
            polls_total: self.0.polls_total.load(Relaxed),
            clients_evicted: evicted,
            channels: if several {
                channels.len()
            } else {
                channel_count as usize
            },
            subscriptions: subscriptions as usize,
            uptime_s: self.0.started.elapsed().as_secs(),
            scope: Some(StatsScope::redis(nodes, redis.node())),
            // Redis decides the drops (its queues are bounded): the
            // cluster's count. The other hook counters are this node's.
            hooks: self.0.hooks.as_ref().map(|h| crate::hooks::HookStats {
                dropped: hooks_dropped,
                ..h.stats()
            }),
        })
    }

    /// `/clients/<id>` on Redis: cluster-wide.
    pub(super) async fn presence_remote(
        &self,
        redis: &RedisStore,
        id: &ClientId,
    ) -> Result<Option<Presence>, StoreError> {
        let group = redis.groups().of(id.as_str());
        let reply = redis
            .run(Step::Presence, group, vec![id.as_str().into()])
            .await?;
        if reply.is_empty() {
            return Ok(None);
        }
        Ok(Some(Presence {
            client: id.to_string(),
            online: reply.int(0) > 0,
            open_polls: reply.int(0) as u32,
            pending_messages: reply.int(1) as usize,
            channels: (3..reply.len()).map(|i| reply.text(i)).collect(),
            idle_ms: reply.int(2) as u64,
        }))
    }

    /// Whether the store answers (`/health`): always for local stores.
    pub fn storage_healthy(&self) -> bool {
        self.redis().is_none_or(|r| r.healthy())
    }
}

/// Limits go to Lua as decimal text; `usize::MAX` would not survive Lua's
/// doubles, so huge values are capped (nothing counts that high).
fn limits_arg(n: usize) -> Vec<u8> {
    n.min(1 << 50).to_string().into_bytes()
}

/// A node that has not swept for this long no longer counts in `nodes`.
fn node_gone_after(idle_limit: Duration) -> Duration {
    super::reaper::sweep_interval(idle_limit) * 3
}

/// The reaper on Redis: every sweep interval, one node's sweep (any node's;
/// each script run is atomic) evicts idle clients cluster-wide, slot group
/// by slot group in batches, and records this node's heartbeat.
pub(super) fn spawn_remote_reaper(
    hub: &Hub,
    redis: Arc<RedisStore>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let idle = hub.limits().client_idle_timeout;
    let every = super::reaper::sweep_interval(idle);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            for g in 0..redis.groups().len() {
                // This node's heartbeat goes with the first group's sweep.
                let heartbeat = if g == 0 { redis.node() } else { "" };
                loop {
                    let args: Args = vec![
                        idle.as_millis().to_string().into(),
                        REAP_BATCH.to_string().into(),
                        heartbeat.into(),
                        node_gone_after(idle).as_millis().to_string().into(),
                    ];
                    match redis.run(Step::Reap, g, args).await {
                        Ok(reply) => {
                            let (evicted, looked) = (reply.int(0), reply.int(1));
                            if evicted > 0 {
                                tracing::debug!(evicted, group = g, "idle clients forgotten");
                            }
                            if (looked as usize) < REAP_BATCH {
                                break;
                            }
                        }
                        Err(_) => break, // logged by the store; next tick retries
                    }
                }
            }
        }
    })
}
