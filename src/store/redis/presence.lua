-- GET /clients/<id>, cluster-wide. ARGV[5] client. Returns {} without a
-- mailbox, else {open polls, pending, idle ms, channel...}.
local id = ARGV[5]
local k = mk(id)
if redis.call('EXISTS', k) == 0 then return {} end
purge(id)
redis.call('ZREMRANGEBYSCORE', plk(id), '-inf', NOW)
local last = tonumber(redis.call('ZSCORE', ACTIVE, id)) or NOW
local out = {redis.call('ZCARD', plk(id)), redis.call('LLEN', qk(id)), math.max(NOW - last, 0)}
local chans = redis.call('SMEMBERS', chk(id))
table.sort(chans)
for _, ch in ipairs(chans) do out[#out + 1] = ch end
return done(out)
