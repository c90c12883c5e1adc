-- readFailedLogins: how many failed logins a user name or a client IP has in its current window.
--
-- KEYS[1] failure counter <prefix>:rl:user:<name> or <prefix>:rl:ip:<ip or IPv6 subnet>
--
-- Returns {failures, ms until the window ends}; {0, 0} when there is no window.
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then return {0, 0} end
return {tonumber(redis.call('GET', KEYS[1]) or '0'), ttl}
