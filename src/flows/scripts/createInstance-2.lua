-- createInstance: creates a flow instance only if its id is new, so starting twice with the same
-- message id is one instance.
--
-- KEYS[1] instance meta hash <prefix>:flow:{<id>}:meta
-- KEYS[2] instance input (string) <prefix>:flow:{<id>}:input
--
-- ARGV[1] the input (JSON) when it is kept apart from the meta hash (too long for its compact
--         encoding even in pieces), '' when meta fields hold it or there is none
-- ARGV[2..n] field, value, field, value, … (flow, status, createdAt, …, input or its pieces i0, i1, …)
--
-- Returns CreateInstanceCode: 1 Created, 0 Exists (nothing written).
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
if ARGV[1] ~= '' then redis.call('SET', KEYS[2], ARGV[1]) end
return 1
