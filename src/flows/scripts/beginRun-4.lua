-- beginRun: starts one run of a flow instance in one round trip: takes the replay lock, marks the
-- instance as run by this run (so a process that kept the instance in memory can tell whether
-- anyone ran it since), turns a waiting instance back to running, and reads its meta and, when
-- asked, its journal and the input kept apart.
--
-- KEYS[1] instance lock <prefix>:flow:{<id>}:lock
-- KEYS[2] instance meta hash <prefix>:flow:{<id>}:meta
-- KEYS[3] instance journal hash <prefix>:flow:{<id>}:journal
-- KEYS[4] instance input (string, only when too long for the meta hash, whose field input or
--         pieces i0, i1, … hold it otherwise) <prefix>:flow:{<id>}:input
--
-- ARGV[1] this run's token (the lock's value and the new run mark)
-- ARGV[2] lock time to live (ms)
-- ARGV[3] '1' to read the journal and the input, '0' when the caller holds the flow in memory
-- ARGV[4] the time now (ISO 8601: updatedAt when a waiting instance goes back to running)
--
-- A lock already held with this token (taken by createInstance for an eager start) is taken again.
--
-- Returns { 0 } when another run holds the lock (BeginRunCode.Busy), { 2 } when the lock is held
-- but the instance has ended (BeginRunCode.Finished: finishInstance leaves its lock to expire, and
-- nothing is left to run); otherwise
-- { 1, previous run mark or nil, meta field/value list (empty: no instance), journal list,
-- input kept apart or nil }. The meta list is as read, before this run's changes.
if not redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then
  -- The lock taken with this token at the instance's creation (an eager start begun late) is ours.
  if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
  else
    local ended = redis.call('HGET', KEYS[2], 'status')
    if ended == 'completed' or ended == 'failed' or ended == 'cancelled' then return { 2 } end
    return { 0 }
  end
end
local meta = redis.call('HGETALL', KEYS[2])
if #meta == 0 then return { 1, false, meta, {} } end
local previous = false
local status = false
local inline = false
for i = 1, #meta, 2 do
  if meta[i] == 'run' then previous = meta[i + 1] end
  if meta[i] == 'status' then status = meta[i + 1] end
  if meta[i] == 'input' or meta[i] == 'i0' then inline = true end
end
-- One write: the run mark, and a waiting instance is running again (what it waited for is history).
if status == 'waiting' then
  redis.call('HSET', KEYS[2], 'run', ARGV[1], 'status', 'running', 'updatedAt', ARGV[4])
  redis.call('HDEL', KEYS[2], 'waitingOn')
else
  redis.call('HSET', KEYS[2], 'run', ARGV[1])
end
local journal = {}
local input = false
if ARGV[3] == '1' then
  -- An empty run mark is set at creation: never run, so nothing is journaled yet.
  if previous ~= '' then journal = redis.call('HGETALL', KEYS[3]) end
  if not inline then input = redis.call('GET', KEYS[4]) end
end
return { 1, previous, meta, journal, input }
