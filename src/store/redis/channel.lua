-- GET /channels/<name>, one slot group's share. ARGV[5] the channel.
-- Returns {client, online (1 while a poll lease is live, else 0), ...} for
-- its members in this group.
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', members(ARGV[5]))) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('ZCOUNT', plk(id), '(' .. NOW, '+inf') > 0 and 1 or 0
end
return out
