-- With [hooks]: what a poll must ask before it opens. ARGV: [4] client.
-- Returns {online 0|1, channel...}: online when the client is in the
-- cluster's presence set (an `online` sent, its `offline` not yet decided:
-- see presence_sweep.lua), and the channels its mailbox holds.
local id = ARGV[4]
local online = redis.call('ZSCORE', P .. 'online', id) and 1 or 0
local out = {online}
if redis.call('EXISTS', mk(id)) == 1 then
  for _, ch in ipairs(redis.call('SMEMBERS', chk(id))) do out[#out + 1] = ch end
end
return out
