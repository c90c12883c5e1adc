-- decideTask: decides an open task once, claiming it in the same step if it was unclaimed. Of two
-- people deciding at the same moment exactly one wins; the other learns who.
--
-- KEYS[1] task hash                 <prefix>:{tasks}:task:<id>
-- KEYS[2] task history list         <prefix>:{tasks}:task:<id>:history
-- KEYS[3] open-task index the caller believes lists the task (of ARGV[6]/ARGV[7])
-- KEYS[4] set of decided tasks whose decision is not yet delivered <prefix>:{tasks}:unnotified
-- KEYS[5] every open task of the shard by due date <prefix>:{tasks}:open-by-due
-- KEYS[6] the shard's events journal (hash: event id → CloudEvent JSON) <prefix>:{tasks}:events
--
-- ARGV[1] who decides (principal id)
-- ARGV[2] decision (JSON)
-- ARGV[3] history entry 'decided' (JSON)
-- ARGV[4] now (ISO time)
-- ARGV[5] task id
-- ARGV[6] expected owner field: 'assignee' or 'group'
-- ARGV[7] expected owner name
-- ARGV[8..n] event id, event (JSON), … (the `decided` event), journaled only with the decision
--
-- Returns {TaskCode, holder}: {'ok', by}; {'missing', ''}; {'decided', decidedBy};
-- {'claimed', claimedBy} when someone else holds it; {'stale_index', ''} when the task's owner
-- is no longer ARGV[6]/ARGV[7] (it was moved): nothing written, read the owner again and retry.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', ''} end
if status ~= 'open' then return {'decided', redis.call('HGET', KEYS[1], 'decidedBy') or ''} end
local claimed = redis.call('HGET', KEYS[1], 'claimedBy')
if claimed and claimed ~= '' and claimed ~= ARGV[1] then return {'claimed', claimed} end
local assignee = redis.call('HGET', KEYS[1], 'assignee') or ''
local group = redis.call('HGET', KEYS[1], 'group') or ''
local owned
if ARGV[6] == 'assignee' then owned = assignee ~= '' and assignee == ARGV[7] else owned = assignee == '' and group == ARGV[7] end
if not owned then return {'stale_index', ''} end
redis.call('ZREM', KEYS[3], ARGV[5])
redis.call('ZREM', KEYS[5], ARGV[5])
redis.call('HSET', KEYS[1], 'status', 'decided', 'decidedBy', ARGV[1], 'claimedBy', ARGV[1], 'decision', ARGV[2], 'updatedAt', ARGV[4])
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[4], ARGV[5])
if #ARGV > 7 then redis.call('HSET', KEYS[6], unpack(ARGV, 8)) end
return {'ok', ARGV[1]}
