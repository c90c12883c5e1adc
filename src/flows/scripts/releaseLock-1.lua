-- releaseLock: gives up the replay lock of a flow instance, only if this process still holds it
-- (never another process's lock taken over after ours expired).
--
-- KEYS[1] instance lock <prefix>:flow:{<id>}:lock
--
-- ARGV[1] the holder's token
--
-- Returns LockCode: 1 Done, 0 NotHeld.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
