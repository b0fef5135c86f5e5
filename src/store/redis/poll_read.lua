-- A held poll (or stream) looking again after a wake-up. ARGV: [4] client,
-- [5] has since 0|1, [6] since epoch, [7] since seq, [8] max bytes,
-- [9] overhead, [10] its lease, [11] the lease's new deadline ms: the
-- lease is renewed (if it has not lapsed) and the idle clock restarts, so
-- an `/events` stream held for longer than a poll timeout stays counted.
if redis.call('EXISTS', mk(ARGV[4])) == 1 then
  redis.call('ZADD', plk(ARGV[4]), 'XX', tonumber(ARGV[11]), ARGV[10])
  redis.call('ZADD', ACTIVE, NOW, ARGV[4])
end
return done(read(ARGV[4], ARGV[5] == '1', tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])))
