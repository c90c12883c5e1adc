-- claimTask: marks an open task as being worked on by one person ("I am working on this").
-- Claiming a task one already holds is a no-op.
--
-- KEYS[1] task hash         <prefix>:{tasks}:task:<id>
-- KEYS[2] task history list <prefix>:{tasks}:task:<id>:history
-- KEYS[3] the shard's events journal (hash: event id → CloudEvent JSON) <prefix>:{tasks}:events
--
-- ARGV[1] who claims (principal id)
-- ARGV[2] history entry 'claimed' (JSON)
-- ARGV[3] now (ISO time)
-- ARGV[4..n] event id, event (JSON), … (the `claimed` event), journaled only when this claims it
--
-- Returns {TaskCode, holder}: {'ok', by}; {'missing', ''}; {'decided', decidedBy};
-- {'claimed', claimedBy} when someone else holds it.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', ''} end
if status ~= 'open' then return {'decided', redis.call('HGET', KEYS[1], 'decidedBy') or ''} end
local claimed = redis.call('HGET', KEYS[1], 'claimedBy') or ''
if claimed ~= '' and claimed ~= ARGV[1] then return {'claimed', claimed} end
if claimed == ARGV[1] then return {'ok', ARGV[1]} end
redis.call('HSET', KEYS[1], 'claimedBy', ARGV[1], 'updatedAt', ARGV[3])
redis.call('RPUSH', KEYS[2], ARGV[2])
if #ARGV > 3 then redis.call('HSET', KEYS[3], unpack(ARGV, 4)) end
return {'ok', ARGV[1]}
