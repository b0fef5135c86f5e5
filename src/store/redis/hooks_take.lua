-- The shared hook queue `hooks` is delivered by one node at a time (so
-- every client's events reach the backend in the order they were decided):
-- the node holding the lease `hooks:lock`. ARGV: [5] this node's id, [6]
-- lease ms, [7] at most this many events, [8] from this index. Takes or
-- renews the lease if it is free or ours; returns {'mine', event...} (the
-- events of the queue from that index, left in it until hooks_done
-- removes them) or {'busy'}. The holder keeps the events it took and has
-- not removed, always the queue's first ones (only ever pushed at its
-- tail, only the holder removes), and asks for those after them.
local holder = redis.call('GET', HOOKLOCK)
if holder and holder ~= ARGV[5] then return {'busy'} end
redis.call('SET', HOOKLOCK, ARGV[5], 'PX', tonumber(ARGV[6]))
local out = {'mine'}
local n, from = tonumber(ARGV[7]), tonumber(ARGV[8])
if n > 0 then
  for _, e in ipairs(redis.call('LRANGE', HOOKQ, from, from + n - 1)) do out[#out + 1] = e end
end
return out
