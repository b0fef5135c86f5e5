-- Cluster-wide figures for /stats.
local s = redis.call('HMGET', STATS, 'subs', 'queued', 'lost', 'evicted')
redis.call('ZREMRANGEBYSCORE', P .. 'nodes', '-inf', NOW - tonumber(ARGV[4]))
return {redis.call('ZCARD', ACTIVE), redis.call('SCARD', CHANNELS),
  tonumber(s[1]) or 0, tonumber(s[2]) or 0, tonumber(s[3]) or 0, tonumber(s[4]) or 0,
  redis.call('ZCARD', P .. 'nodes')}
