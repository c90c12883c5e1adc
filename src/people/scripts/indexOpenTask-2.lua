-- indexOpenTask: lists a task in its shard's open-by-due index when, at this moment, it is open
-- and not listed yet: the backfill of tasks created before that index existed. Checking and adding
-- are one step, so a task decided meanwhile (decideTask takes it out of the index) is never added
-- back, and a task listed already keeps its score.
--
-- KEYS[1] task hash                                 <prefix>:{tasks}:task:<id>
-- KEYS[2] every open task of the shard by due date  <prefix>:{tasks}:open-by-due
--
-- ARGV[1] task id
-- ARGV[2] due date in epoch ms, or '+inf' when the task has none (the score createTask gives)
--
-- Returns 1 when the task was added, 0 when not (not open, gone, or listed already).
if redis.call('HGET', KEYS[1], 'status') ~= 'open' then return 0 end
return redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1])
