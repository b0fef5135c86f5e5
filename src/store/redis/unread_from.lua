-- Where a new reader of a mailbox (a Bayeux session) starts: after the
-- last message a read returned (`d`), so nothing accepted and never
-- delivered is skipped. ARGV[5] client. Returns {'ok', epoch, seq} or
-- {'gone'} (no mailbox: the reader starts with whatever comes).
local k = mk(ARGV[5])
if redis.call('EXISTS', k) == 0 then return {'gone'} end
local m = redis.call('HMGET', k, 'e', 'd')
return {'ok', (tonumber(m[1]) + salt()) % 4294967296, tonumber(m[2])}
