-- GET /channels, one slot group's share: {name, members here, ...} for
-- every channel with members in this group (the Rust side adds the groups
-- up by name).
local out = {}
for _, ch in ipairs(redis.call('SMEMBERS', CHANNELS)) do
  out[#out + 1] = ch
  out[#out + 1] = redis.call('SCARD', members(ch))
end
return out
