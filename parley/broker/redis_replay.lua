-- Moves one dead letter back into the stream, atomically (two replays of one id add it once).
-- KEYS: dead stream, stream; ARGV: dead letter id. Returns 1 if moved, 0 if not there.
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return 0 end
local fields = found[1][2]
local keep = {}
for i = 1, #fields, 2 do
  local name = fields[i]
  if name == 'body' or string.sub(name, 1, 2) == 'h:' then
    keep[#keep + 1] = name
    keep[#keep + 1] = fields[i + 1]
  end
end
redis.call('XADD', KEYS[2], '*', unpack(keep))
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
