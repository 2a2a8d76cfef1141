if (redis.call('HGET', KEYS[1], ARGV[1]) or '') == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1]) return 1
end
return 0
