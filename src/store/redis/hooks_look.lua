-- With [hooks]: what a poll must ask before it opens. ARGV: [5] client.
-- Returns {online 0|1, channel...}: online with the mailbox it has now
-- (see `is_online` in prelude.lua), and the channels that mailbox holds.
local id = ARGV[5]
local out = {is_online(id) and 1 or 0}
if redis.call('EXISTS', mk(id)) == 1 then
  for _, ch in ipairs(redis.call('SMEMBERS', chk(id))) do out[#out + 1] = ch end
end
return out
