-- acceptPublication: accepts one message published to a topic for exactly the subscriptions that
-- exist now, in one step: the caller read the registry at version ARGV[1] and chose the matching
-- subscriptions; if the registry changed since, nothing is written and the caller reads it again.
-- An id the same sender published to the same topic before is accepted, not delivered again.
--
-- KEYS[1] registry version       <prefix>:{topics}:version
-- KEYS[2] fan-out log (stream)   <prefix>:{topics}:log
-- KEYS[3] dedup mark             <prefix>:{topics}:seen:<dedupKey>
--
-- ARGV[1] the registry version the subscriptions were read at ('0' before the first change)
-- ARGV[2] the publication: JSON of the message and the subscriptions it goes to, '' when none match
-- ARGV[3] how long the id is remembered (ms)
--
-- Returns 'stale' (registry changed: nothing written), 'duplicate' (nothing written), '' when
-- accepted with no subscription to copy to, else the id of the log entry to copy from.
local version = redis.call('GET', KEYS[1]) or '0'
if version ~= ARGV[1] then return 'stale' end
if redis.call('EXISTS', KEYS[3]) == 1 then return 'duplicate' end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[3])
if ARGV[2] == '' then return '' end
return redis.call('XADD', KEYS[2], '*', 'p', ARGV[2])
