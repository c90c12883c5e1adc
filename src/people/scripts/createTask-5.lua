-- createTask: creates a task once per id (a repeated message is one task) and lists it in the
-- open-task index of its person or group.
--
-- KEYS[1] task hash                   <prefix>:{tasks}:task:<id>
-- KEYS[2] task history list           <prefix>:{tasks}:task:<id>:history
-- KEYS[3] open-task index of its owner <prefix>:{tasks}:open:person:<name> or …:open:group:<name>
-- KEYS[4] every open task of the shard by due date <prefix>:{tasks}:open-by-due
-- KEYS[5] the shard's events journal (hash: event id → CloudEvent JSON) <prefix>:{tasks}:events
--
-- ARGV[1] spec (JSON: title, data, actions, routing, …)
-- ARGV[2] now (ISO time, the task's createdAt)
-- ARGV[3] history entry 'created' (JSON)
-- ARGV[4] index score (createdAt in epoch ms)
-- ARGV[5] task id
-- ARGV[6] owner field: 'assignee' or 'group'
-- ARGV[7] owner name
-- ARGV[8] due date in epoch ms, or '+inf' when the task has none (what the metrics count)
-- ARGV[9..n] event id, event (JSON), … (the `created` event; none when no `events:` mapping wants it)
--
-- Returns CreateTaskCode: 1 Created, 0 Exists (nothing written, no event).
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'spec', ARGV[1], 'status', 'open', 'updatedAt', ARGV[2], ARGV[6], ARGV[7])
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
redis.call('ZADD', KEYS[4], ARGV[8], ARGV[5])
if #ARGV > 8 then redis.call('HSET', KEYS[5], unpack(ARGV, 9)) end
return 1
