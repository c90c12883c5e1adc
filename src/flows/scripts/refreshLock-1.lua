-- refreshLock: extends the replay lock of a flow instance, only if this process still holds it.
--
-- KEYS[1] instance lock <prefix>:flow:{<id>}:lock
--
-- ARGV[1] the holder's token
-- ARGV[2] new time to live (ms)
--
-- Returns LockCode: 1 Done, 0 NotHeld (expired, or another process holds it now).
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
