-- A poll's start: creates the mailbox if needed (cluster-wide max_clients),
-- counts the poll (a lease that lapses by itself if its node dies), joins
-- `channels=`, then reads. ARGV:
--   [4] client, [5] lease, [6] lease deadline ms, [7] max_polls_per_client,
--   [8] max_clients, [9] max_channels_per_client, [10] token iat or '',
--   [11] has since 0|1, [12] since epoch, [13] since seq, [14] max bytes,
--   [15] per-message overhead, [16] clients in the other slot groups,
--   [17..] channels to join
local id = ARGV[4]
local k = mk(id)
if redis.call('EXISTS', k) == 0 then
  if redis.call('ZCARD', ACTIVE) + tonumber(ARGV[16]) >= tonumber(ARGV[8]) then return {'too-many-clients'} end
  ensure(id)
end
local leases = plk(id)
redis.call('ZREMRANGEBYSCORE', leases, '-inf', NOW)
local open = redis.call('ZCARD', leases)
if open >= tonumber(ARGV[7]) then return {'too-many-polls', open} end
local iat = tonumber(ARGV[10])
local new, seen = {}, {}
for j = 17, #ARGV do
  local ch = ARGV[j]
  if not seen[ch] and redis.call('SISMEMBER', chk(id), ch) == 0 and not revoked(id, ch, iat) then
    seen[ch] = true
    new[#new + 1] = ch
  end
end
if #new > 0 and redis.call('SCARD', chk(id)) + #new > tonumber(ARGV[9]) then
  return {'too-many-channels'}
end
for _, ch in ipairs(new) do join(id, ch) end
redis.call('ZADD', leases, tonumber(ARGV[6]), ARGV[5])
redis.call('ZADD', ACTIVE, NOW, id)
return done(read(id, ARGV[11] == '1', tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15])))
