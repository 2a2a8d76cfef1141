-- Moves due delayed retries into the stream. KEYS: zset, stream; ARGV: now, prefix of hash keys.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100)
for _, id in ipairs(due) do
  local key = ARGV[2] .. id
  local fields = redis.call('HGETALL', key)
  if #fields > 0 then
    redis.call('XADD', KEYS[2], '*', unpack(fields))
  end
  redis.call('DEL', key)
  redis.call('ZREM', KEYS[1], id)
end
return #due
