-- createInstance: creates a flow instance only if its id is new, so starting twice with the same
-- message id is one instance; the instance's `started` event is journaled in the same step.
--
-- KEYS[1] instance meta hash <prefix>:flow:{<id>}:meta
-- KEYS[2] instance input (string) <prefix>:flow:{<id>}:input
-- KEYS[3] instance events journal (hash: event id → CloudEvent JSON) <prefix>:flow:{<id>}:events
--
-- ARGV[1] the input (JSON) when it is kept apart from the meta hash (too long for its compact
--         encoding even in pieces), '' when meta fields hold it or there is none
-- ARGV[2] e: how many event id, event pairs end ARGV (0 when no `events:` mapping wants them)
-- ARGV[3..n-2e] field, value, field, value, … (flow, status, createdAt, …, input or its pieces i0, i1, …)
-- ARGV[n-2e+1..n] event id, event (JSON), … journaled only when the instance is created
--
-- Returns CreateInstanceCode: 1 Created, 0 Exists (nothing written, no event).
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local last = #ARGV - 2 * tonumber(ARGV[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 3, last))
if ARGV[1] ~= '' then redis.call('SET', KEYS[2], ARGV[1]) end
if last < #ARGV then redis.call('HSET', KEYS[3], unpack(ARGV, last + 1)) end
return 1
