-- With [hooks]: a poll just opened (its lease is in Redis). The client goes
-- online cluster-wide unless it is already: it joins the presence set
-- `online` (client -> when to look at it next, ms) and, when the node
-- wants `online` events, its `online` event is queued in the shared hook
-- queue `hooks` in the same step, so it is neither lost nor sent twice.
-- ARGV: [4] client, [5] offline_after ms, [6] the `online` event's JSON
-- (empty: `online` is not in hooks.events). Returns 1 if it went online.
local id = ARGV[4]
if redis.call('EXISTS', mk(id)) == 0 then return 0 end
if redis.call('ZADD', P .. 'online', 'NX', NOW + tonumber(ARGV[5]), id) == 0 then return 0 end
if ARGV[6] ~= '' then redis.call('RPUSH', P .. 'hooks', ARGV[6]) end
return 1
