-- storeFloatEntry: keeps one message (or notice) on the float for the gateway to pull, once per
-- dedup id: a peer's resend of a message the float already has (or handed over within the event
-- horizon) is accepted and not stored again.
--
-- KEYS[1] <prefix>:{float-in}:seen:<entry id>   remembered for the event horizon
-- KEYS[2] <prefix>:{float-in}:data             hash: entry id → entry (JSON)
-- KEYS[3] <prefix>:{float-in}:ready            list of entry ids waiting to be pulled, oldest first
--
-- ARGV[1] the entry id
-- ARGV[2] the entry (JSON)
-- ARGV[3] how long the id is remembered (ms)
--
-- Returns 1 when stored, 0 when the id was seen before (nothing is written).
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[3]) then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  redis.call('RPUSH', KEYS[3], ARGV[1])
  return 1
end
return 0
