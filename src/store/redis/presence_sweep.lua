-- With [hooks]: decides `offline` cluster-wide (any node may run it; each
-- run is atomic, so each `offline` is decided once). Looks at the clients
-- of the presence set whose time to be looked at has come: one with a
-- live lease (a poll or stream open on any node) is looked at again after
-- offline_after; one without, idle for less than offline_after, when it
-- will have been; the others (idle that long, or their mailbox gone by
-- `<disconnect>` or eviction) leave the set and their `offline` is queued
-- in `hooks`. ARGV: [4] offline_after ms, [5] at most this many clients,
-- [6] the node's hooks.node, [7] 24 random hex digits (event ids), [8]
-- whether `offline` is in hooks.events (1|0). Returns {offline, looked}.
local ONLINE, AFTER = P .. 'online', tonumber(ARGV[4])
local due = redis.call('ZRANGEBYSCORE', ONLINE, '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[5]))
local offline = 0
for _, id in ipairs(due) do
  local again = nil
  if redis.call('EXISTS', mk(id)) == 1 then
    redis.call('ZREMRANGEBYSCORE', plk(id), '-inf', NOW)
    if redis.call('ZCARD', plk(id)) > 0 then
      again = NOW + AFTER
    else
      local last = tonumber(redis.call('ZSCORE', ACTIVE, id)) or 0
      if NOW - last < AFTER then again = last + AFTER end
    end
  end
  if again then
    redis.call('ZADD', ONLINE, again, id)
  else
    redis.call('ZREM', ONLINE, id)
    offline = offline + 1
    if ARGV[8] == '1' then
      redis.call('RPUSH', P .. 'hooks', cjson.encode({
        id = 'evt-' .. ARGV[7] .. string.format('%08x', offline),
        type = 'offline', client = id, ts = NOW, node = ARGV[6]}))
    end
  end
end
return {offline, #due}
