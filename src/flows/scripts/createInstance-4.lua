-- createInstance: creates a flow instance only if its id is new, so starting twice with the same
-- message id is one instance; the instance's `started` event is journaled in the same step. A
-- start run eagerly by the process that creates it also begins that run here (takes the replay
-- lock; the meta's run mark is the same token), saving beginRun's round trip.
--
-- KEYS[1] instance meta hash <prefix>:flow:{<id>}:meta
-- KEYS[2] instance input (string) <prefix>:flow:{<id>}:input
-- KEYS[3] instance events journal (hash: event id → CloudEvent JSON) <prefix>:flow:{<id>}:events
-- KEYS[4] instance lock <prefix>:flow:{<id>}:lock
--
-- ARGV[1] the input (JSON) when it is kept apart from the meta hash (too long for its compact
--         encoding even in pieces), '' when meta fields hold it or there is none
-- ARGV[2] e: how many event id, event pairs end ARGV (0 when no `events:` mapping wants them)
-- ARGV[3] the token of the run begun with the instance ('' for none: a run job will run it)
-- ARGV[4] that lock's time to live (ms)
-- ARGV[5..n-2e] field, value, field, value, … (flow, status, createdAt, run, …, input or its
--         pieces i0, i1, …)
-- ARGV[n-2e+1..n] event id, event (JSON), … journaled only when the instance is created
--
-- Returns CreateInstanceCode: 1 Created, 0 Exists (nothing written, no event, no lock).
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local last = #ARGV - 2 * tonumber(ARGV[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 5, last))
if ARGV[1] ~= '' then redis.call('SET', KEYS[2], ARGV[1]) end
if last < #ARGV then redis.call('HSET', KEYS[3], unpack(ARGV, last + 1)) end
if ARGV[3] ~= '' then redis.call('SET', KEYS[4], ARGV[3], 'PX', ARGV[4]) end
return 1
