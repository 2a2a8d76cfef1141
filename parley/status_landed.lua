-- KEYS: record, landed set (emptied by StatusStore.begin_version), index, served map, progress
-- stream. ARGV: version, batch index, chunks in batch, now, tenant, document id, the stream's
-- length. Returns 1 when this call made the document ready, 2 when it was already ready with
-- this version (redelivery), 0 otherwise (more batches to come), -1 when the version is no
-- longer wanted (stale). On 0 and 1 the record is published to the progress stream in the same
-- script: a worker killed between the two would otherwise leave a ready document whose
-- "ready" event nobody sends (its redelivery changes nothing, so publishes nothing).
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

-- The record as DocumentStatus.model_dump_json writes it: every field, typed, null for none.
local raw = redis.call('HGETALL', KEYS[1])
local record = {}
for i = 1, #raw, 2 do record[raw[i]] = raw[i + 1] end
local function text(name, default)
  local v = record[name]
  if v == nil or v == '' then return default end
  return v
end
local function number(name, default)
  local v = tonumber(record[name] or '')
  if v == nil then return default end
  return v
end
local doc = {
  document_id = text('document_id', ARGV[6]), tenant = text('tenant', ARGV[5]),
  filename = text('filename', ''), path = text('path', ''), stage = text('stage', 'queued'),
  reason = text('reason', cjson.null), message = text('message', cjson.null),
  pages_total = number('pages_total', cjson.null), pages_done = number('pages_done', 0),
  chunks = number('chunks', 0), chunks_done = number('chunks_done', 0),
  batches_total = number('batches_total', 0), version = text('version', cjson.null),
  pending_version = text('pending_version', cjson.null), etag = text('etag', cjson.null),
  sequencer = text('sequencer', cjson.null), attempts = number('attempts', 0),
}
-- The times as stored (Python's repr of a float), whole: cjson keeps 14 digits only.
local function time(name)
  local v = record[name] or ''
  if string.match(v, '^%d+%.?%d*$') then return v end
  return '0'
end
local json = string.sub(cjson.encode(doc), 1, -2) .. ',"created_at":' .. time('created_at')
  .. ',"updated_at":' .. time('updated_at') .. '}'
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[7], '*', 'd', json)
return result
