-- releaseLease: gives a lease up at a clean stop, so another process takes the duty at once
-- instead of after the time to live; only the holder's own token releases it.
--
-- KEYS[1] the lease <prefix>:lease:<duty>
--
-- ARGV[1] the holder's token
--
-- Returns LeaseCode: 1 Renewed (here: released), 0 NotHeld (nothing is written).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
