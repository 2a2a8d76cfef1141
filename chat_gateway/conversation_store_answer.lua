-- KEYS: meta, log, index, seen; ARGV: owner, entry, now, ttl, max entries, id.
-- 0: gone (deleted meanwhile) or already recorded; 1: recorded.
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
if not redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[4]) then return 0 end
redis.call('HSET', KEYS[1], 'updated', ARGV[3])
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[5]), -1)
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[6])
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
return 1
