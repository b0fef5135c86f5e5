-- Idle eviction in one slot group (any node may run it; each run is
-- atomic). ARGV: [5] idle limit ms, [6] at most this many clients per run,
-- [7] this node's id to record its heartbeat ('' but in the first group),
-- [8] a node is gone after this many ms
local NODES = G .. 'nodes'
if ARGV[7] ~= '' then
  redis.call('ZADD', NODES, NOW, ARGV[7])
  redis.call('ZREMRANGEBYSCORE', NODES, '-inf', NOW - tonumber(ARGV[8]))
end
local idle = redis.call('ZRANGEBYSCORE', ACTIVE, '-inf', NOW - tonumber(ARGV[5]), 'LIMIT', 0, tonumber(ARGV[6]))
local evicted = 0
for _, id in ipairs(idle) do
  redis.call('ZREMRANGEBYSCORE', plk(id), '-inf', NOW)
  if redis.call('ZCARD', plk(id)) > 0 then
    redis.call('ZADD', ACTIVE, NOW, id) -- a poll is open somewhere
  else
    forget(id)
    evicted = evicted + 1
  end
end
if evicted > 0 then redis.call('HINCRBY', STATS, 'evicted', evicted) end
return done({evicted, #idle})
