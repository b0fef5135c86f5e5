-- With [hooks]: a poll just opened (its lease is in Redis). The client goes
-- online cluster-wide unless it is already (with this mailbox), and its
-- `online` is queued in the shared hook queue in the same step, so it is
-- neither lost nor sent twice however many nodes see polls at once. Online
-- with a mailbox that is gone (disconnected, evicted, lost), it first gets
-- that session's `offline`. ARGV: [4] client, [5] offline_after ms, [6]
-- the `online` event's JSON ('' when `online` is not in hooks.events),
-- [7] hooks.node, [8] 24 random hex digits, [9] 1 when `offline` is in
-- hooks.events. Returns 1 if it went online.
local id = ARGV[4]
local e = redis.call('HGET', mk(id), 'e')
if not e then return 0 end
local was = redis.call('HGET', EPOCHS, id)
if was == e then return 0 end
if was then go_offline(id, ARGV[9] == '1', ARGV[7], ARGV[8], 1) end
redis.call('HSET', EPOCHS, id, e)
redis.call('ZADD', ONLINE, NOW + tonumber(ARGV[5]), id)
if ARGV[6] ~= '' then redis.call('RPUSH', HOOKQ, ARGV[6]) end
return 1
