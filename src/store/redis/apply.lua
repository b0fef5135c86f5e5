-- An ingest batch's share in one slot group (all of the batch with one
-- server), all of it or nothing (checks first), in order.
-- ARGV[5] mailbox_max_messages, [6] max_clients, [7] max_channels_per_client,
-- [8] unix seconds, [9] clients in the other groups, [10] the mode:
-- 'apply' (check, then all of it or nothing), 'check' (check only: a
-- multi-group batch checks every share before any applies), 'force' (apply
-- without checking: every share was just checked), then the commands:
--   'm' 'c'|'h' <client or channel> <expires ms> <own ttl 0|1> <json tail>
--   's' <client> <channel>    'u' <client> <channel>    'd' <client>
--   'l' <client> <channel>    (a browser's own leave: no revocation kept)
local MAXM, MAXC, MAXCH, SECS = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local OTHERS = tonumber(ARGV[9])
local MODE = ARGV[10]
local cmds, i = {}, 11
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'm' then
    cmds[#cmds + 1] = {op, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]}
    i = i + 6
  elseif op == 's' or op == 'u' or op == 'l' then
    cmds[#cmds + 1] = {op, ARGV[i + 1], ARGV[i + 2]}
    i = i + 3
  else
    cmds[#cmds + 1] = {op, ARGV[i + 1]}
    i = i + 2
  end
end

-- Room for new clients (max_clients over every group) and channels per client.
local new, nnew, wanted = {}, 0, {}
for _, c in ipairs(cmds) do
  local id = nil
  if c[1] == 'm' and c[2] == 'c' then id = c[3] end
  if c[1] == 's' then
    id = c[2]
    wanted[id] = wanted[id] or {}
    wanted[id][c[3]] = true
  end
  if id and not new[id] and redis.call('EXISTS', mk(id)) == 0 then
    new[id] = true
    nnew = nnew + 1
  end
end
if MODE ~= 'force' then
  if nnew > 0 and redis.call('ZCARD', ACTIVE) + OTHERS + nnew > MAXC then
    return {'too-many-clients', nnew}
  end
  for id, chans in pairs(wanted) do
    local n = redis.call('SCARD', chk(id))
    for ch in pairs(chans) do
      if redis.call('SISMEMBER', chk(id), ch) == 0 then n = n + 1 end
    end
    if n > MAXCH then return {'too-many-channels', id} end
  end
  -- The share's new clients: the batch's total, over every group, is
  -- checked against max_clients before any share applies.
  if MODE == 'check' then return {'ok', nnew} end
end

-- Who a message to channel `ch` reaches in this group: its members and the
-- members of every pattern held here that matches it (for `/a/b/c`:
-- `/a/b/*`, `/a/b/**`, `/a/**`, `/**`; as ChannelName::matching_patterns),
-- each client once. Without patterns held, one SMEMBERS.
local function recipients_of(ch)
  local exact = redis.call('SMEMBERS', members(ch))
  if redis.call('SCARD', PATTERNS) == 0 then return exact end
  local lists = {}
  if #exact > 0 then lists[1] = exact end
  local function add(pattern)
    if redis.call('SISMEMBER', PATTERNS, pattern) == 1 then
      local list = redis.call('SMEMBERS', members(pattern))
      if #list > 0 then lists[#lists + 1] = list end
    end
  end
  for at = #ch - 1, 1, -1 do
    if string.byte(ch, at) == 47 then -- '/', with something after it
      local prefix = string.sub(ch, 1, at)
      if not string.find(ch, '/', at + 1, true) then add(prefix .. '*') end
      add(prefix .. '**')
    end
  end
  if #lists <= 1 then return lists[1] or {} end
  local seen, all = {}, {}
  for _, list in ipairs(lists) do
    for _, id in ipairs(list) do
      if not seen[id] then
        seen[id] = true
        all[#all + 1] = id
      end
    end
  end
  return all
end

local woken, wlist = {}, {}
local function wake(id)
  if not woken[id] then
    woken[id] = true
    wlist[#wlist + 1] = id
  end
end
local messages = 0
for _, c in ipairs(cmds) do
  local op = c[1]
  if op == 'm' then
    messages = messages + 1
    local exp = tonumber(c[4])
    local recipients
    if c[2] == 'c' then
      ensure(c[3])
      recipients = {c[3]}
    else
      recipients = recipients_of(c[3])
    end
    if #recipients > 0 then
      -- The payload is stored once (per group), however many mailboxes
      -- point at it.
      local pid = redis.call('HINCRBY', STATS, 'msgid', 1)
      redis.call('SET', payload(pid), c[6], 'PX', math.max(exp - NOW, 1))
      for _, id in ipairs(recipients) do
        append(id, pid, exp, c[5], MAXM)
        wake(id)
      end
    end
  elseif op == 's' then
    ensure(c[2])
    redis.call('HDEL', rvk(c[2]), c[3])
    join(c[2], c[3])
  elseif op == 'l' then
    if redis.call('EXISTS', mk(c[2])) == 1 then leave(c[2], c[3]) end
  elseif op == 'u' then
    local id, ch = c[2], c[3]
    if redis.call('EXISTS', mk(id)) == 1 then
      leave(id, ch)
      local rv = rvk(id)
      redis.call('HDEL', rv, ch)
      if redis.call('HLEN', rv) >= MAXCH then
        -- Bounded like subscriptions: the oldest kick is forgotten.
        local all, oldest, at = redis.call('HGETALL', rv), nil, nil
        for j = 1, #all, 2 do
          local t = tonumber(all[j + 1])
          if not at or t < at then oldest, at = all[j], t end
        end
        redis.call('HDEL', rv, oldest)
      end
      redis.call('HSET', rv, ch, SECS)
    end
  else
    if redis.call('EXISTS', mk(c[2])) == 1 then
      forget(c[2])
      wake(c[2])
    end
  end
end
if #wlist > 0 then redis.call('PUBLISH', WAKE, table.concat(wlist, '\n')) end
return done({'ok', messages})
