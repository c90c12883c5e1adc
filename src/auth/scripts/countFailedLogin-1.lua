-- countFailedLogin: counts one failed login of a user name or a client IP in a fixed window that
-- starts with the first failure (the count and its expiry are one atomic step, so a counter can
-- never be left without an expiry).
--
-- KEYS[1] failure counter <prefix>:rl:user:<name> or <prefix>:rl:ip:<ip or IPv6 subnet>
--
-- ARGV[1] window (ms)
--
-- Returns {failures, ms until the window ends}.
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then
  redis.call('SET', KEYS[1], 1, 'PX', ARGV[1])
  return {1, tonumber(ARGV[1])}
end
return {redis.call('INCR', KEYS[1]), ttl}
