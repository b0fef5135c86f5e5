-- With [hooks]: what the presence and hook-queue scripts share (after
-- prelude.lua). A client is online while `online:e` holds the epoch of
-- the mailbox it went online with (a mailbox recreated after a
-- `<disconnect>`, an eviction or a loss in Redis is another session: the
-- old one's `offline` comes first). `online` schedules when the sweep
-- looks at each online client next (ms).
local ONLINE = P .. 'online'       -- zset: client -> next look (ms)
local EPOCHS = P .. 'online:e'     -- hash: client -> epoch it went online with
local HOOKQ = P .. 'hooks'         -- list: event JSON, oldest first
local HOOKLOCK = P .. 'hooks:lock' -- string: the delivering node's id (PX)

-- Whether `id` is online with the mailbox it has now.
local function is_online(id)
  local was = redis.call('HGET', EPOCHS, id)
  return was and was == redis.call('HGET', mk(id), 'e')
end

-- Takes `id` out of the presence set and, when `wanted`, queues its
-- `offline` stamped by `node`, its id 'evt-' .. hex24 .. n (8 hex digits).
local function go_offline(id, wanted, node, hex24, n)
  redis.call('ZREM', ONLINE, id)
  redis.call('HDEL', EPOCHS, id)
  if wanted then
    redis.call('RPUSH', HOOKQ, cjson.encode({
      id = 'evt-' .. hex24 .. string.format('%08x', n),
      type = 'offline', client = id, ts = NOW, node = node}))
  end
end
