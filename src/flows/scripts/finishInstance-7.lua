-- finishInstance: ends a run that finished the instance (completed or failed): journals its last
-- steps, records the outcome and its event (`completed`, `failed`) unless a cancel landed during
-- the run (a cancel stands) and keeps the instance's state for the retention time, in one round
-- trip. The replay lock is left to expire: a finished instance has nothing left to run (beginRun
-- answers Finished while it stands, and an admin retry drops it), and not deleting it is one
-- command fewer per flow.
--
-- KEYS[1] instance meta hash <prefix>:flow:{<id>}:meta
-- KEYS[2] instance journal hash <prefix>:flow:{<id>}:journal
-- KEYS[3] instance inbox list <prefix>:flow:{<id>}:inbox
-- KEYS[4] ids delivered (set) <prefix>:flow:{<id>}:seen
-- KEYS[5] ids consumed (set) <prefix>:flow:{<id>}:consumed
-- KEYS[6] instance input (string, only when too long for the meta hash) <prefix>:flow:{<id>}:input
-- KEYS[7] instance events journal (hash: event id → CloudEvent JSON) <prefix>:flow:{<id>}:events
--
-- ARGV[1] retention (ms): how long the finished instance stays visible
-- ARGV[2] how many meta fields follow (m: field, value pairs, status and updatedAt among them)
-- ARGV[3] e: how many event id, event pairs end ARGV (0 when no `events:` mapping wants them)
-- ARGV[4..n-2e] the m meta field/value pairs, then journal step number, entry (JSON), … (may be none)
-- ARGV[n-2e+1..n] event id, event (JSON), … journaled only when the outcome is recorded
--
-- Returns the instance's status before this script (nil: no instance; 'cancelled': nothing
-- recorded over the cancel).
local m = tonumber(ARGV[2])
local last = #ARGV - 2 * tonumber(ARGV[3])
if last > 3 + 2 * m then redis.call('HSET', KEYS[2], unpack(ARGV, 4 + 2 * m, last)) end
-- No waitingOn to drop: beginRun removed it when the instance went from waiting to running.
local read = redis.call('HMGET', KEYS[1], 'status', 'input', 'i0', 'inbox', 'id')
local status = read[1]
if status and status ~= 'cancelled' then
  redis.call('HSET', KEYS[1], unpack(ARGV, 4, 3 + 2 * m))
  if last < #ARGV then redis.call('HSET', KEYS[7], unpack(ARGV, last + 1)) end
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
  -- The input has a key of its own only when the meta hash holds neither it nor its pieces.
  if not read[2] and not read[3] then redis.call('PEXPIRE', KEYS[6], ARGV[1]) end
  -- Only an instance that was delivered a message has inbox, seen and consumed keys: deliverMessage
  -- marks its meta (inbox). Instances stored before that mark (they have an id field) are asked.
  if read[4] or (read[5] and redis.call('EXISTS', KEYS[3], KEYS[4], KEYS[5]) > 0) then
    redis.call('PEXPIRE', KEYS[3], ARGV[1])
    redis.call('PEXPIRE', KEYS[4], ARGV[1])
    redis.call('PEXPIRE', KEYS[5], ARGV[1])
  end
end
return status
