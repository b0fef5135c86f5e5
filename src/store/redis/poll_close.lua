-- A poll's end: its lease goes, the idle clock restarts. Batched (each_item
-- in prelude.lua); an item's A: [1] client, [2] lease.
return each_item(function(A)
  local id = A[1]
  if redis.call('EXISTS', mk(id)) == 0 then return 0 end
  redis.call('ZREM', plk(id), A[2])
  redis.call('ZADD', ACTIVE, NOW, id)
  return 1
end)
