-- createInstance: creates a flow instance only if its id is new, so starting twice with the same
-- message id is one instance.
--
-- KEYS[1] instance meta hash <prefix>:flow:{<id>}:meta
--
-- ARGV[1..n] field, value, field, value, … (id, flow, status, input, createdAt, …)
--
-- Returns CreateInstanceCode: 1 Created, 0 Exists (nothing written).
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
