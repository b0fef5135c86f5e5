-- With [hooks]: decides `offline` in this group (any node may run it; each
-- run is atomic, so each `offline` is decided once). Looks at the online
-- clients whose time has come: one with a live lease (a poll or stream
-- open on any node) is looked at again after offline_after; one without,
-- idle for less than offline_after, when it will have been; the others
-- (idle that long, or their mailbox gone or recreated since) go offline.
-- ARGV: [5] at most this many clients. Returns {offline, looked}.
local due = redis.call('ZRANGEBYSCORE', ONLINE, '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[5]))
local offline = 0
for _, id in ipairs(due) do
  local again = nil
  if is_online(id) then
    redis.call('ZREMRANGEBYSCORE', plk(id), '-inf', NOW)
    if redis.call('ZCARD', plk(id)) > 0 then
      again = NOW + OFFLINE_AFTER
    else
      local last = tonumber(redis.call('ZSCORE', ACTIVE, id)) or 0
      if NOW - last < OFFLINE_AFTER then again = last + OFFLINE_AFTER end
    end
  end
  if again then
    redis.call('ZADD', ONLINE, again, id)
  elseif redis.call('HEXISTS', EPOCHS, id) == 1 then
    offline = offline + 1
    go_offline(id)
  else
    redis.call('ZREM', ONLINE, id) -- (not online: nothing to announce)
  end
end
return {offline, #due}
