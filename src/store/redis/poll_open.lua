-- A poll's start: creates the mailbox if needed (cluster-wide max_clients),
-- counts the poll (a lease that lapses by itself if its node dies), goes
-- online (with hooks), joins `channels=`, then reads. Batched (each_item in prelude.lua); an item's A:
--   [1] client, [2] lease, [3] lease deadline ms, [4] max_polls_per_client,
--   [5] max_clients, [6] max_channels_per_client, [7] token iat or '',
--   [8] has since 0|1, [9] since epoch, [10] since seq, [11] max bytes,
--   [12] per-message overhead, [13] clients in the other slot groups,
--   [14..] channels to join
return each_item(function(A)
  local id = A[1]
  local k = mk(id)
  if redis.call('EXISTS', k) == 0 then
    if redis.call('ZCARD', ACTIVE) + tonumber(A[13]) >= tonumber(A[5]) then return {'too-many-clients'} end
    ensure(id)
  end
  local leases = plk(id)
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', NOW)
  local open = redis.call('ZCARD', leases)
  if open >= tonumber(A[4]) then return {'too-many-polls', open} end
  local iat = tonumber(A[7])
  local new, seen = {}, {}
  for j = 14, #A do
    local ch = A[j]
    if not seen[ch] and redis.call('SISMEMBER', chk(id), ch) == 0 and not revoked(id, ch, iat) then
      seen[ch] = true
      new[#new + 1] = ch
    end
  end
  if #new > 0 and redis.call('SCARD', chk(id)) + #new > tonumber(A[6]) then
    return {'too-many-channels'}
  end
  -- With hooks the client goes online here, so its `online` comes before
  -- the `subscribed` of the poll's channels (as on one node).
  if HOOKS then go_online(id) end
  for _, ch in ipairs(new) do join(id, ch) end
  redis.call('ZADD', leases, tonumber(A[3]), A[2])
  redis.call('ZADD', ACTIVE, NOW, id)
  return read(id, A[8] == '1', tonumber(A[9]), tonumber(A[10]), tonumber(A[11]), tonumber(A[12]))
end)
