-- KEYS: record, landed set (emptied by StatusStore.begin_version), index, served map. ARGV:
-- version, batch index, chunks in batch, now, tenant, document id. Returns 1 when this call
-- made the document ready, 2 when it was already ready with this version (redelivery), 0
-- otherwise (more batches to come), -1 when the version is no longer wanted (stale).
local pending = redis.call('HGET', KEYS[1], 'pending_version')
local active = redis.call('HGET', KEYS[1], 'version')
if pending ~= ARGV[1] then
  if active == ARGV[1] then return 2 end
  return -1
end
local added = redis.call('SADD', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], 604800)
if added == 1 then
  redis.call('HINCRBY', KEYS[1], 'chunks_done', ARGV[3])
end
local total = tonumber(redis.call('HGET', KEYS[1], 'batches_total') or '0')
local result = 0
if redis.call('SCARD', KEYS[2]) >= total then
  redis.call('HSET', KEYS[1], 'version', ARGV[1], 'pending_version', '', 'stage', 'ready',
             'reason', '', 'message', '')
  redis.call('HSET', KEYS[4], ARGV[6], ARGV[1])
  redis.call('DEL', KEYS[2])
  result = 1
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[6])
return result
