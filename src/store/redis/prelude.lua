-- cometbox: what every script shares (keys, mailbox steps). Each script is
-- this prelude followed by its own body; the Rust side (mod.rs) passes the
-- same KEYS[1] and first ARGV to all of them:
--   KEYS[1] the slot group's key base (groups.rs): every key a script
--           touches starts with it, so in a Redis Cluster it is one slot
--   ARGV[1] key prefix (the wake channel), ARGV[2] now (unix ms),
--   ARGV[3] a random u32 (new epochs), ARGV[4] '1' when every master runs
--   `appendfsync always` (else '0'; fsync.rs), then the [hooks] settings
--   ('' without hooks; see `notify`)
-- A key's kind is its first component after the base, and a client id or
-- channel name is the whole rest, so ids holding ':' cannot collide.
local G = KEYS[1]
local P = ARGV[1]
local NOW = tonumber(ARGV[2])
local SEED = tonumber(ARGV[3])
local FSYNC_ALWAYS = string.sub(ARGV[4], 1, 1) == '1'
local HOOKS_ARG = string.sub(ARGV[4], 2)
local ACTIVE = G .. 'active'      -- zset: client id -> last activity (ms)
local STATS = G .. 'stats'        -- hash: msgid, subs, queued, lost, evicted, hooks_dropped
local CHANNELS = G .. 'channels'  -- set: channels with at least one member here
local PATTERNS = G .. 'patterns'  -- set: the wildcard patterns among CHANNELS
local RUN = G .. 'run'            -- hash: id (instance marker), salt (epochs)
local WAKE = P .. 'wake'          -- pub/sub: ids whose mailbox changed
local HOOKQ = G .. 'hooks'        -- list: hook notifications (JSON), oldest first

-- Change of STATS.queued, written once when the script ends (`done`):
-- a 10,000-member fan-out then costs one HINCRBY, not 10,000.
local queued_delta = 0
local function done(result)
  -- (never `-0`: Lua writes it as "-0", which HINCRBY refuses; `~= 0`
  -- excludes it)
  if queued_delta ~= 0 then redis.call('HINCRBY', STATS, 'queued', queued_delta) end
  return result
end

local function mk(id) return G .. 'm:' .. id end   -- hash e h f l d
local function qk(id) return G .. 'q:' .. id end   -- list of "seq:expires:own:pid"
local function chk(id) return G .. 's:' .. id end  -- set of its channels
local function rvk(id) return G .. 'r:' .. id end  -- hash channel -> unsubscribed at (s)
local function plk(id) return G .. 'l:' .. id end  -- zset poll lease -> deadline (ms)
local function members(ch) return G .. 'ch:' .. ch end -- its members in this group
local function payload(pid) return G .. 'p:' .. pid end

local function parse(entry)
  local seq, exp, own, pid = string.match(entry, '^(%d+):(%d+):(%d):(%d+)$')
  return tonumber(seq), tonumber(exp), own == '1', pid
end

local created = 0
-- Creates the mailbox if missing, with a fresh epoch: a mailbox Redis lost
-- comes back under a new epoch, so older cursors get `reset`.
local function ensure(id)
  local k = mk(id)
  if redis.call('EXISTS', k) == 1 then return false end
  created = created + 1
  local epoch = (SEED + created * 40503) % 4294967296
  redis.call('HSET', k, 'e', epoch, 'h', 0, 'f', 1, 'l', 0, 'd', 0)
  redis.call('ZADD', ACTIVE, NOW, id)
  return true
end

-- Drops the oldest entry; `lost`: dropped before it was due (retention),
-- so cursors before it must `reset`.
local function drop_front(id, lost)
  local k = mk(id)
  local entry = redis.call('LPOP', qk(id))
  local seq = parse(entry)
  redis.call('HSET', k, 'f', seq + 1)
  queued_delta = queued_delta - 1
  if lost then
    redis.call('HSET', k, 'l', seq)
    if seq > tonumber(redis.call('HGET', k, 'd')) then
      redis.call('HINCRBY', STATS, 'lost', 1)
    end
  end
end

local function purge(id)
  local q = qk(id)
  while true do
    local front = redis.call('LINDEX', q, 0)
    if not front then return end
    local _, exp, own = parse(front)
    if exp > NOW then return end
    drop_front(id, not own)
  end
end

local function append(id, pid, exp, own, max_messages)
  purge(id)
  local seq = redis.call('HINCRBY', mk(id), 'h', 1)
  local len = redis.call('RPUSH', qk(id), seq .. ':' .. exp .. ':' .. own .. ':' .. pid)
  queued_delta = queued_delta + 1
  if len > max_messages then drop_front(id, true) end
end

-- A wildcard pattern (`/chat/*`, `/chat/**`) rather than one channel.
local function is_pattern(ch) return string.byte(ch, -1) == 42 end -- '*'

-- With [hooks] (HOOKS_ARG, '' without): notifications are queued in this
-- group's hook queue in the same step as what they announce (so they are
-- neither lost nor sent twice, whichever node ran it), and presence is
-- kept per group. HOOKS_ARG is
--   "<subscribed><unsubscribed><online><offline>\t<offline_after ms>\t<max_pending>\t<24 hex digits>\t<node>"
-- (each flag 1 when that type is in hooks.events); event ids are 'evt-',
-- those digits and a counter. The queue is bounded as on one node: an
-- opening event (online, subscribed) is dropped once max_pending wait, and
-- its closing one is then not queued either (HOOKQUIET remembers the
-- pair); a closing one once twice max_pending wait. Drops are counted in
-- STATS `hooks_dropped`. A client is online while `online:e` holds the
-- epoch of the mailbox it went online with (a mailbox recreated after a
-- `<disconnect>`, an eviction or a loss in Redis is another session: the
-- old one's `offline` comes first); `online` schedules when the sweep looks
-- at each online client next (ms).
local HOOKS, WANT, OFFLINE_AFTER, HOOK_MAX, EVENT_HEX, EVENT_NODE = false, {}, 0, 0, '', ''
do
  local s, u, on, off, after, max, hex, node =
    string.match(HOOKS_ARG, '^([01])([01])([01])([01])\t(%d+)\t(%d+)\t(%x+)\t(.*)$')
  if s then
    HOOKS, OFFLINE_AFTER, HOOK_MAX, EVENT_HEX, EVENT_NODE = true, tonumber(after), tonumber(max), hex, node
    WANT = {subscribed = s == '1', unsubscribed = u == '1', online = on == '1', offline = off == '1'}
  end
end
local ONLINE = G .. 'online'       -- zset: client -> next look (ms)
local EPOCHS = G .. 'online:e'     -- hash: client -> epoch it went online with
local HOOKLOCK = G .. 'hooks:lock' -- string: the node delivering this group's queue (PX)
-- set: JSON [client, channel or ''] of the pairs whose opening event was
-- dropped, so that their closing one is not queued either
local HOOKQUIET = G .. 'hooks:quiet'
local OPENING = {online = true, subscribed = true}

local events_queued = 0
-- Queues the notification `kind` about `id` (`ch`: its channel, or nil)
-- if hooks.events has it and the queue has room (see HOOKS_ARG above).
local function notify(kind, id, ch)
  if not HOOKS then return end
  local pair = cjson.encode({id, ch or ''})
  -- A closing event whose opening one was dropped: not queued either.
  if not OPENING[kind] and redis.call('SREM', HOOKQUIET, pair) == 1 then return end
  if not WANT[kind] then return end
  local room = OPENING[kind] and HOOK_MAX or 2 * HOOK_MAX
  if redis.call('LLEN', HOOKQ) >= room then
    redis.call('HINCRBY', STATS, 'hooks_dropped', 1)
    if OPENING[kind] then redis.call('SADD', HOOKQUIET, pair) end
    return
  end
  events_queued = events_queued + 1
  redis.call('RPUSH', HOOKQ, cjson.encode({
    id = 'evt-' .. EVENT_HEX .. string.format('%08x', events_queued),
    type = kind, client = id, channel = ch, ts = NOW, node = EVENT_NODE}))
end

-- Whether `id` is online with the mailbox it has now.
local function is_online(id)
  local was = redis.call('HGET', EPOCHS, id)
  return was and was == redis.call('HGET', mk(id), 'e')
end

-- Takes `id` out of the presence set, queueing its `offline`.
local function go_offline(id)
  redis.call('ZREM', ONLINE, id)
  redis.call('HDEL', EPOCHS, id)
  notify('offline', id)
end

-- A poll opened: `id` goes online unless it is already (with this
-- mailbox), its `online` queued; online with a mailbox that is gone, it
-- first gets that session's `offline`.
local function go_online(id)
  local e = redis.call('HGET', mk(id), 'e')
  if not e then return end
  local was = redis.call('HGET', EPOCHS, id)
  if was == e then return end
  if was then go_offline(id) end
  redis.call('HSET', EPOCHS, id, e)
  redis.call('ZADD', ONLINE, NOW + OFFLINE_AFTER, id)
  notify('online', id)
end

local function join(id, ch)
  if redis.call('SADD', chk(id), ch) == 0 then return false end
  redis.call('SADD', members(ch), id)
  redis.call('SADD', CHANNELS, ch)
  if is_pattern(ch) then redis.call('SADD', PATTERNS, ch) end
  notify('subscribed', id, ch)
  redis.call('HINCRBY', STATS, 'subs', 1)
  return true
end

local function leave(id, ch)
  if redis.call('SREM', chk(id), ch) == 0 then return end
  notify('unsubscribed', id, ch)
  redis.call('SREM', members(ch), id)
  if redis.call('SCARD', members(ch)) == 0 then
    redis.call('SREM', CHANNELS, ch)
    if is_pattern(ch) then redis.call('SREM', PATTERNS, ch) end
  end
  redis.call('HINCRBY', STATS, 'subs', -1)
end

-- Removes a client entirely (disconnect, idle eviction).
local function forget(id)
  for _, ch in ipairs(redis.call('SMEMBERS', chk(id))) do leave(id, ch) end
  queued_delta = queued_delta - redis.call('LLEN', qk(id))
  redis.call('DEL', mk(id), qk(id), chk(id), rvk(id), plk(id))
  redis.call('ZREM', ACTIVE, id)
end

-- Whether a backend's unsubscribe of `ch` stands against a token issued at
-- `iat` (nil: a token without iat, taken as older).
local function revoked(id, ch, iat)
  local at = redis.call('HGET', rvk(id), ch)
  return at and (iat == nil or iat <= tonumber(at))
end

-- The instance marker: what makes cursors `reset` when Redis went back in
-- time with the mailbox still there (docs/storage.md, "Redis loses data").
-- RUN holds the replication id of the instance that last served a read, a
-- salt added to every epoch of the group, and whether that instance ran
-- with `appendfsync always` (as the nodes last found, FSYNC_ALWAYS).
-- Another instance now (its replication id differs) means a restart or a
-- failover:
-- - no RUN at all: a fresh or emptied Redis; any salt will do;
-- - the writer's id is this instance's `master_replid2`: a replica promoted
--   in its place, which may lack the last writes: new salt;
-- - else a restart (or the keys moved): its data came from disk; only an
--   AOF fsynced before every answer is taken as complete (RDB snapshots
--   lag; `everysec`, Redis's default, loses the last second to a machine
--   crash): unless the lost instance ran AOF with `always`, new salt.
-- A new salt changes every epoch of the group, so every cursor `reset`s
-- (with what is retained) instead of resuming past ids Redis may reuse.
local salt_now = nil -- one look per script run (a batch reads many mailboxes)
local function salt()
  if salt_now then return salt_now end
  local info = redis.call('INFO', 'replication')
  local me = string.match(info, 'master_replid:(%x+)') or ''
  local promoted_from = string.match(info, 'master_replid2:(%x+)')
  local run = redis.call('HMGET', RUN, 'id', 'salt', 'always')
  local s = tonumber(run[2])
  local always = FSYNC_ALWAYS and '1' or '0'
  if run[1] ~= me then
    local keep = s ~= nil and run[1] ~= promoted_from and run[3] == '1'
      and string.find(redis.call('INFO', 'persistence'), 'aof_enabled:1', 1, true) ~= nil
    if not keep then s = SEED end
    redis.call('HSET', RUN, 'id', me, 'salt', s, 'always', always)
  elseif run[3] ~= always then
    redis.call('HSET', RUN, 'always', always)
  end
  salt_now = s
  return s
end

-- What a poll sees after its cursor. Returns
-- {'ok', epoch, cursor_seq, reset, seq1, tail1, ...} or {'gone'}.
local function read(id, has_since, since_epoch, since_seq, max_bytes, overhead)
  local k = mk(id)
  if redis.call('EXISTS', k) == 0 then return {'gone'} end
  purge(id)
  local m = redis.call('HMGET', k, 'e', 'h', 'f', 'l', 'd')
  local e, h, f, l, d = tonumber(m[1]), tonumber(m[2]), tonumber(m[3]), tonumber(m[4]), tonumber(m[5])
  e = (e + salt()) % 4294967296
  local start, reset = f, 0
  if has_since then
    if since_epoch == e and since_seq >= l and since_seq <= h then
      start = math.max(since_seq + 1, f)
    else
      reset = 1
    end
  end
  local out = {'ok', e, h, reset}
  -- A budget of 0: an open that wants no look (nothing marked delivered).
  if max_bytes == 0 then return out end
  local bytes, last = 0, nil
  if start <= h then
    for _, entry in ipairs(redis.call('LRANGE', qk(id), start - f, -1)) do
      local seq, exp, _, pid = parse(entry)
      if exp > NOW then
        local tail = redis.call('GET', payload(pid))
        if tail then
          bytes = bytes + #tail + overhead
          if bytes > max_bytes and last then
            out[3] = last -- the rest waits for the next poll, which resumes here
            break
          end
          out[#out + 1] = seq
          out[#out + 1] = tail
          last = seq
        else
          -- Due, yet its payload is gone (evicted under maxmemory, deleted
          -- by hand, lost by Redis): a loss, never a silent skip. This
          -- reply resets, and so does any cursor from before it.
          out[4] = 1
          if seq > l then l = seq; redis.call('HSET', k, 'l', seq) end
        end
      end
    end
  end
  if last and last > d then redis.call('HSET', k, 'd', last) end
  return out
end

-- The per-poll scripts (a poll's start, its look after a wake-up, its end)
-- are batched: a node sends the calls that queued up while its previous one
-- ran as one script run (src/store/redis/batch.rs), so a fan-out to
-- thousands of polls costs Redis a few runs, not one per poll. ARGV[5] is
-- the item count, then each item is its argument count followed by its
-- arguments; `step(A)` runs one item, and the reply is their replies in order.
local function each_item(step)
  local out, i = {}, 6
  for k = 1, tonumber(ARGV[5]) do
    local n, A = tonumber(ARGV[i]), {}
    for j = 1, n do A[j] = ARGV[i + j] end
    out[k] = step(A)
    i = i + 1 + n
  end
  return done(out)
end
