-- One slot group's figures for /stats (the Rust side adds the groups up):
-- {clients, channels, subs, queued, lost, evicted, nodes, hook
-- notifications dropped, channel...}.
-- ARGV: [5] a node is gone after this many ms, [6] '1': also list the
-- group's channels (a cluster: a channel with members in several groups
-- counts once).
local NODES = G .. 'nodes'
local s = redis.call('HMGET', STATS, 'subs', 'queued', 'lost', 'evicted', 'hooks_dropped')
redis.call('ZREMRANGEBYSCORE', NODES, '-inf', NOW - tonumber(ARGV[5]))
local out = {redis.call('ZCARD', ACTIVE), redis.call('SCARD', CHANNELS),
  tonumber(s[1]) or 0, tonumber(s[2]) or 0, tonumber(s[3]) or 0, tonumber(s[4]) or 0,
  redis.call('ZCARD', NODES), tonumber(s[5]) or 0}
if ARGV[6] == '1' then
  for _, ch in ipairs(redis.call('SMEMBERS', CHANNELS)) do out[#out + 1] = ch end
end
return out
