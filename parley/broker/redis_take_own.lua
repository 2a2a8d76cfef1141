-- Claims, for a consumer that has just started under a name its predecessor used, the entries
-- still pending to that name (the predecessor died holding them), atomically: an entry another
-- consumer took meanwhile is no longer pending to the name and is left alone.
-- KEYS: stream; ARGV: group, consumer, count, then the ids this process already holds (skipped).
-- Returns {ids claimed with their deliveries before this one, claimed entries}; the second
-- list is XCLAIM's reply (an entry deleted while pending comes back without fields).
local skip = {}
for i = 4, #ARGV do skip[ARGV[i]] = true end
local count = tonumber(ARGV[3])
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', count + #ARGV - 3, ARGV[2])
local ids, delivered = {}, {}
for _, entry in ipairs(pending) do
  if not skip[entry[1]] and #ids < count then
    ids[#ids + 1] = entry[1]
    delivered[#delivered + 1] = entry[1]
    delivered[#delivered + 1] = entry[4]
  end
end
if #ids == 0 then return {{}, {}} end
return {delivered, redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(ids))}
