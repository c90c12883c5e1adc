-- deliverMessage: puts a message into a flow instance's inbox once per message id (idempotent
-- receiver). A repeat of a message already taken is a duplicate even after the instance finished
-- (a route redelivering after a crash must hear "duplicate", not "conflict").
--
-- KEYS[1] ids of messages delivered to the instance (set) <prefix>:flow:{<id>}:seen
-- KEYS[2] the instance's inbox (list of stored messages)  <prefix>:flow:{<id>}:inbox
-- KEYS[3] instance meta hash                              <prefix>:flow:{<id>}:meta
--
-- ARGV[1] message id
-- ARGV[2] stored message (JSON)
--
-- Returns DeliverCode: 1 Delivered, 0 Duplicate, -1 NoInstance, -2 Finished (completed or
-- cancelled: it takes no more messages).
local status = redis.call('HGET', KEYS[3], 'status')
if not status then return -1 end
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 0 end
if status == 'completed' or status == 'cancelled' then return -2 end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('RPUSH', KEYS[2], ARGV[2])
-- The mark finishInstance looks for: this instance has inbox keys to keep for the retention.
redis.call('HSET', KEYS[3], 'inbox', '1')
return 1
