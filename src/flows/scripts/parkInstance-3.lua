-- parkInstance: ends a run that waits: journals its last steps, records what the instance waits
-- for (unless a cancel landed during the run: a cancel stands) and gives up the replay lock, in
-- one round trip.
--
-- KEYS[1] instance meta hash <prefix>:flow:{<id>}:meta
-- KEYS[2] instance journal hash <prefix>:flow:{<id>}:journal
-- KEYS[3] instance lock <prefix>:flow:{<id>}:lock
--
-- ARGV[1] this run's token (the lock is released only if it still holds it)
-- ARGV[2] what the instance waits for (JSON, the meta field waitingOn)
-- ARGV[3] the time now (ISO 8601, the meta field updatedAt)
-- ARGV[4..n] journal step number, entry (JSON), step number, entry, … (may be none)
--
-- Returns the instance's status before this script ('cancelled' when a cancel stands).
if #ARGV > 3 then redis.call('HSET', KEYS[2], unpack(ARGV, 4)) end
local status = redis.call('HGET', KEYS[1], 'status')
if status and status ~= 'cancelled' then
  redis.call('HSET', KEYS[1], 'status', 'waiting', 'waitingOn', ARGV[2], 'updatedAt', ARGV[3])
end
if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
return status
