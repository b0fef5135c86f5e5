-- The node holding `hooks:lock` delivered the first ARGV[6] events of
-- `hooks`: they leave the queue (only ever pushed at its tail, only the
-- holder removes from its head). ARGV: [5] this node's id, [6] how many,
-- [7] the last of them as it was taken (so that a call sent twice, after
-- a dropped connection, removes nothing more), [8] 1 to give the lease up
-- (shutdown). Returns 1, or 0 when the lease was not ours any more or the
-- head is not what was delivered (another node delivers it again; an
-- event's id is the same every time, so the backend drops repeats).
if redis.call('GET', HOOKLOCK) ~= ARGV[5] then return 0 end
local n, done = tonumber(ARGV[6]), 0
if n > 0 and redis.call('LINDEX', HOOKQ, n - 1) == ARGV[7] then
  redis.call('LTRIM', HOOKQ, n, -1)
  done = 1
end
if ARGV[8] == '1' then redis.call('DEL', HOOKLOCK) end
return done
