-- renewLease: extends a lease only while the caller still holds it (its token is the value), so
-- a process that lost its lease (expired, taken over) cannot extend another holder's.
--
-- KEYS[1] the lease <prefix>:lease:<duty>
--
-- ARGV[1] the holder's token
-- ARGV[2] new time to live, ms
--
-- Returns LeaseCode: 1 Renewed, 0 NotHeld (nothing is written).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
