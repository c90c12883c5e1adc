-- cancelInstance: cancels a flow instance that has not ended, with its `cancelled` event in the
-- same step (a run still going sees the status at its next step and stops; its end leaves a
-- cancel standing).
--
-- KEYS[1] instance meta hash <prefix>:flow:{<id>}:meta
-- KEYS[2] instance events journal (hash: event id → CloudEvent JSON) <prefix>:flow:{<id>}:events
--
-- ARGV[1] who cancels (principal id, the meta field cancelledBy)
-- ARGV[2] the time now (ISO 8601, the meta field updatedAt)
-- ARGV[3] e: how many event id, event pairs follow (0 when no `events:` mapping wants them)
-- ARGV[4..n] event id, event (JSON), … journaled only when the instance is cancelled here
--
-- Returns the instance's status before this script: nil when there is no instance; 'completed',
-- 'failed' or 'cancelled' when it had ended (nothing written); otherwise it is cancelled now.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if status == 'completed' or status == 'failed' or status == 'cancelled' then return status end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'cancelledBy', ARGV[1], 'updatedAt', ARGV[2])
redis.call('HDEL', KEYS[1], 'waitingOn')
if tonumber(ARGV[3]) > 0 then redis.call('HSET', KEYS[2], unpack(ARGV, 4)) end
return status
