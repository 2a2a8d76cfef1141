-- KEYS: key; ARGV: expected value ('' = absent), new value. Compare-and-set.
if (redis.call('GET', KEYS[1]) or '') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2]) return 1
end
return 0
