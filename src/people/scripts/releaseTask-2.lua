-- releaseTask: gives back a claimed open task so any member of its group can take it. Only the
-- holder can release it.
--
-- KEYS[1] task hash         <prefix>:{tasks}:task:<id>
-- KEYS[2] task history list <prefix>:{tasks}:task:<id>:history
--
-- ARGV[1] who releases (principal id)
-- ARGV[2] history entry 'released' (JSON)
-- ARGV[3] now (ISO time)
--
-- Returns {TaskCode, holder}: {'ok', by}; {'missing', ''}; {'decided', decidedBy};
-- {'claimed', claimedBy} when ARGV[1] does not hold it (claimedBy '' when nobody does).
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', ''} end
if status ~= 'open' then return {'decided', redis.call('HGET', KEYS[1], 'decidedBy') or ''} end
local claimed = redis.call('HGET', KEYS[1], 'claimedBy') or ''
if claimed ~= ARGV[1] then return {'claimed', claimed} end
redis.call('HDEL', KEYS[1], 'claimedBy')
redis.call('HSET', KEYS[1], 'updatedAt', ARGV[3])
redis.call('RPUSH', KEYS[2], ARGV[2])
return {'ok', ARGV[1]}
