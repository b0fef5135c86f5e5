-- A poll's end: its lease goes, the idle clock restarts. ARGV: [4] client, [5] lease
local id = ARGV[4]
if redis.call('EXISTS', mk(id)) == 0 then return 0 end
redis.call('ZREM', plk(id), ARGV[5])
redis.call('ZADD', ACTIVE, NOW, id)
return 1
