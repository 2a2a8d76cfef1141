-- KEYS: turn stream, owner key, the owner's alive key; ARGV: owner, ttl, maxlen, k, d.
-- Appends the terminal event only if the turn is still the owner's, the owner is not alive and
-- the stream has no terminal event yet: exactly one terminal event, whoever writes it.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then
  local fields = last[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'k' then
      local kind = fields[i + 1]
      if kind == 'final' or kind == 'error' or kind == 'cancelled' then return 0 end
    end
  end
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'k', ARGV[4], 'd', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
