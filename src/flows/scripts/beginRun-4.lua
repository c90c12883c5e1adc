-- beginRun: starts one run of a flow instance in one round trip: takes the replay lock, marks the
-- instance as run by this run (so a process that kept the instance in memory can tell whether
-- anyone ran it since), and reads its meta and, when asked, its journal and the input kept apart.
--
-- KEYS[1] instance lock <prefix>:flow:{<id>}:lock
-- KEYS[2] instance meta hash <prefix>:flow:{<id>}:meta
-- KEYS[3] instance journal hash <prefix>:flow:{<id>}:journal
-- KEYS[4] instance input (string, only when too long for the meta hash) <prefix>:flow:{<id>}:input
--
-- ARGV[1] this run's token (the lock's value and the new run mark)
-- ARGV[2] lock time to live (ms)
-- ARGV[3] '1' to read the journal and the input, '0' when the caller holds the flow in memory
--
-- Returns { 0 } when another run holds the lock (LockCode.NotHeld); otherwise
-- { 1, previous run mark or nil, meta field/value list (empty: no instance), journal list,
-- input kept apart or nil }.
if not redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return { 0 } end
local meta = redis.call('HGETALL', KEYS[2])
if #meta == 0 then return { 1, false, meta, {} } end
local previous = false
for i = 1, #meta, 2 do
  if meta[i] == 'run' then previous = meta[i + 1] end
end
redis.call('HSET', KEYS[2], 'run', ARGV[1])
local journal = {}
local input = false
if ARGV[3] == '1' then
  journal = redis.call('HGETALL', KEYS[3])
  input = redis.call('GET', KEYS[4])
end
return { 1, previous, meta, journal, input }
