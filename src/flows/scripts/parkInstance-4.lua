-- parkInstance: ends a run that waits: journals its last steps, records what the instance waits
-- for and its `waiting` event (unless a cancel landed during the run: a cancel stands) and gives
-- up the replay lock, in one round trip.
--
-- KEYS[1] instance meta hash <prefix>:flow:{<id>}:meta
-- KEYS[2] instance journal hash <prefix>:flow:{<id>}:journal
-- KEYS[3] instance lock <prefix>:flow:{<id>}:lock
-- KEYS[4] instance events journal (hash: event id → CloudEvent JSON) <prefix>:flow:{<id>}:events
--
-- ARGV[1] this run's token (the lock is released only if it still holds it: the run mark is this token)
-- ARGV[2] what the instance waits for (JSON, the meta field waitingOn)
-- ARGV[3] the time now (ISO 8601, the meta field updatedAt)
-- ARGV[4] e: how many event id, event pairs end ARGV (0 when no `events:` mapping wants them)
-- ARGV[5..n-2e] journal step number, entry (JSON), step number, entry, … (may be none)
-- ARGV[n-2e+1..n] event id, event (JSON), … journaled only when the wait is recorded
--
-- Returns the instance's status before this script ('cancelled' when a cancel stands).
local last = #ARGV - 2 * tonumber(ARGV[4])
if last > 4 then redis.call('HSET', KEYS[2], unpack(ARGV, 5, last)) end
local read = redis.call('HMGET', KEYS[1], 'status', 'run')
local status = read[1]
if status and status ~= 'cancelled' then
  redis.call('HSET', KEYS[1], 'status', 'waiting', 'waitingOn', ARGV[2], 'updatedAt', ARGV[3])
  if last < #ARGV then redis.call('HSET', KEYS[4], unpack(ARGV, last + 1)) end
end
-- Whose the lock is, the run mark says: beginRun sets both at once, so while the mark is this
-- run's, the lock key is this run's or has expired with nobody taking it since (no GET needed).
if read[2] == ARGV[1] then redis.call('DEL', KEYS[3]) end
return status
