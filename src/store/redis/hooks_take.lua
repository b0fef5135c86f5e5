-- The shared hook queue `hooks` is delivered by one node at a time, in
-- order (so every client's events reach the backend in the order they
-- were decided): the node holding the lease `hooks:lock`. ARGV: [5] this
-- node's id, [6] lease ms, [7] at most this many events. Takes or renews
-- the lease if it is free or ours; returns {'mine', event...} (the first
-- events of the queue, left in it until hooks_done) or {'busy'}.
local holder = redis.call('GET', HOOKLOCK)
if holder and holder ~= ARGV[5] then return {'busy'} end
redis.call('SET', HOOKLOCK, ARGV[5], 'PX', tonumber(ARGV[6]))
local out = {'mine'}
local n = tonumber(ARGV[7])
if n > 0 then
  for _, e in ipairs(redis.call('LRANGE', HOOKQ, 0, n - 1)) do out[#out + 1] = e end
end
return out
