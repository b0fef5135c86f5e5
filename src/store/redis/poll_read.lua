-- A held poll (or stream) looking again after a wake-up. Batched (each_item
-- in prelude.lua); an item's A: [1] client, [2] has since 0|1, [3] since
-- epoch, [4] since seq, [5] max bytes, [6] overhead, [7] its lease, [8] the
-- lease's new deadline ms: the lease is renewed (if it has not lapsed) and
-- the idle clock restarts, so an `/events` stream held for longer than a
-- poll timeout stays counted.
return each_item(function(A)
  if redis.call('EXISTS', mk(A[1])) == 1 then
    redis.call('ZADD', plk(A[1]), 'XX', tonumber(A[8]), A[7])
    redis.call('ZADD', ACTIVE, NOW, A[1])
  end
  return read(A[1], A[2] == '1', tonumber(A[3]), tonumber(A[4]), tonumber(A[5]), tonumber(A[6]))
end)
