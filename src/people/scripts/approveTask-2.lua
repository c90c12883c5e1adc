-- approveTask: records one approver's approval of an open task that needs several distinct
-- approvers (four-eyes `approvals: N`). The approval that completes the count is not written
-- here: the caller then decides the task with every approval (decideTask), so exactly one final
-- decision is ever recorded.
--
-- KEYS[1] task hash                 <prefix>:{tasks}:task:<id>
-- KEYS[2] task history list         <prefix>:{tasks}:task:<id>:history
--
-- ARGV[1] who approves (principal id)
-- ARGV[2] the approval (JSON: {by, action, comment?, at})
-- ARGV[3] history entry 'approved' (JSON)
-- ARGV[4] now (ISO time)
-- ARGV[5] approvals needed (N)
--
-- Returns {TaskCode, detail}: {'ok', count} recorded (count < N); {'final', approvals JSON}
-- when this approval completes the count (nothing written); {'missing', ''}; {'decided',
-- decidedBy}; {'claimed', claimedBy} when someone else holds it; {'approved_already', by} when
-- this principal approved before (nothing written).
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', ''} end
if status ~= 'open' then return {'decided', redis.call('HGET', KEYS[1], 'decidedBy') or ''} end
local claimed = redis.call('HGET', KEYS[1], 'claimedBy')
if claimed and claimed ~= '' and claimed ~= ARGV[1] then return {'claimed', claimed} end
local approvals = cjson.decode(redis.call('HGET', KEYS[1], 'approvals') or '[]')
for _, a in ipairs(approvals) do
  if a.by == ARGV[1] then return {'approved_already', ARGV[1]} end
end
if #approvals + 1 >= tonumber(ARGV[5]) then return {'final', redis.call('HGET', KEYS[1], 'approvals') or '[]'} end
table.insert(approvals, cjson.decode(ARGV[2]))
redis.call('HSET', KEYS[1], 'approvals', cjson.encode(approvals), 'updatedAt', ARGV[4])
redis.call('RPUSH', KEYS[2], ARGV[3])
return {'ok', tostring(#approvals)}
