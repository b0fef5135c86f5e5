-- The node holding `hooks:lock` is done with these events of `hooks`
-- (delivered, or refused for good by the backend): they leave the queue,
-- wherever they are in it (a client whose event is being retried keeps
-- its place at the head while other clients' events go). ARGV: [5] this
-- node's id, [6] 1 to give the lease up (shutdown), [7...] the events as
-- they were taken. Returns how many were removed (fewer when another node
-- delivered some meanwhile: the holder then takes the queue afresh; an
-- event's id is the same every time, so the backend drops repeats), or -1
-- when the lease is not ours.
if redis.call('GET', HOOKLOCK) ~= ARGV[5] then return -1 end
local removed = 0
for i = 7, #ARGV do
  removed = removed + redis.call('LREM', HOOKQ, 1, ARGV[i])
end
if ARGV[6] == '1' then redis.call('DEL', HOOKLOCK) end
return removed
