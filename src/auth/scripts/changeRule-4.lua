-- changeRule: adds or removes one console permission rule, bumps the rules' version and records
-- the change with its lifecycle event (`permission.changed`), atomically (every process reloads
-- the rules when the version moves).
--
-- KEYS[1] console rules hash (rule id → rule JSON) <prefix>:{perm}:rules
-- KEYS[2] rules version counter                    <prefix>:{perm}:version
-- KEYS[3] change history list                      <prefix>:{perm}:history
-- KEYS[4] events journal (hash: event id → CloudEvent JSON) <prefix>:{perm}:events
--
-- ARGV[1] action: 'add' or 'remove'
-- ARGV[2] rule id
-- ARGV[3] rule (JSON)
-- ARGV[4] change (JSON; its version is filled in here)
-- ARGV[5..n] event id, event (JSON), … journaled only when the rule changes (none when events are off)
--
-- Returns the new version (> 0), or ChangeRuleCode: -1 RuleExists (add of an id already there),
-- -2 NoSuchRule (remove of an id not there). Nothing is written for either.
if ARGV[1] == 'add' then
  if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then return -1 end
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
else
  if redis.call('HDEL', KEYS[1], ARGV[2]) == 0 then return -2 end
end
local v = redis.call('INCR', KEYS[2])
local change = cjson.decode(ARGV[4])
change['version'] = v
redis.call('RPUSH', KEYS[3], cjson.encode(change))
if #ARGV > 4 then redis.call('HSET', KEYS[4], unpack(ARGV, 5)) end
return v
