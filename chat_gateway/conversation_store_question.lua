-- KEYS: meta, log, index, seen; ARGV: subject, entry, title, now, ttl, max entries, id.
-- -1: owned by another subject; 0: already recorded; 1: recorded.
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return -1 end
if not redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[5]) then return 0 end
if not owner then
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'title', ARGV[3], 'created', ARGV[4])
end
redis.call('HSET', KEYS[1], 'updated', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'turns', 1)
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[6]), -1)
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[7])
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
return 1
