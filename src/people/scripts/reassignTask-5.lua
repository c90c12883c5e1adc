-- reassignTask: moves an open task to another person or group (delegate, escalate), from the
-- open-task index of its current owner to that of the new one, unclaimed.
--
-- KEYS[1] task hash         <prefix>:{tasks}:task:<id>
-- KEYS[2] task history list <prefix>:{tasks}:task:<id>:history
-- KEYS[3] open-task index the caller believes lists the task now (of ARGV[8]/ARGV[9])
-- KEYS[4] open-task index of the new owner (of ARGV[1]/ARGV[2])
-- KEYS[5] the shard's events journal (hash: event id → CloudEvent JSON) <prefix>:{tasks}:events
--
-- ARGV[1] new owner field: 'assignee' or 'group'
-- ARGV[2] new owner name
-- ARGV[3] history entry (JSON)
-- ARGV[4] now (ISO time)
-- ARGV[5] task id
-- ARGV[6] holder: only if the task is unclaimed or claimed by this principal ('' for escalation)
-- ARGV[7] new index score (epoch ms)
-- ARGV[8] expected current owner field: 'assignee' or 'group'
-- ARGV[9] expected current owner name
-- ARGV[10..n] event id, event (JSON), … (`delegated` or `escalated`), journaled only with the move
--
-- Returns {TaskCode, holder}: {'ok', ''}; {'missing', ''}; {'decided', decidedBy};
-- {'claimed', claimedBy} when someone other than ARGV[6] holds it; {'stale_index', ''} when the
-- task's owner is no longer ARGV[8]/ARGV[9]: nothing written, read the owner again and retry.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', ''} end
if status ~= 'open' then return {'decided', redis.call('HGET', KEYS[1], 'decidedBy') or ''} end
local claimed = redis.call('HGET', KEYS[1], 'claimedBy') or ''
if ARGV[6] ~= '' and claimed ~= '' and claimed ~= ARGV[6] then return {'claimed', claimed} end
local assignee = redis.call('HGET', KEYS[1], 'assignee') or ''
local group = redis.call('HGET', KEYS[1], 'group') or ''
local owned
if ARGV[8] == 'assignee' then owned = assignee ~= '' and assignee == ARGV[9] else owned = assignee == '' and group == ARGV[9] end
if not owned then return {'stale_index', ''} end
redis.call('ZREM', KEYS[3], ARGV[5])
redis.call('HDEL', KEYS[1], 'assignee', 'group', 'claimedBy')
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], 'updatedAt', ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[7], ARGV[5])
redis.call('RPUSH', KEYS[2], ARGV[3])
if #ARGV > 9 then redis.call('HSET', KEYS[5], unpack(ARGV, 10)) end
return {'ok', ''}
