-- announceEventJournal: tells the drainers that an events journal may get entries (a writer runs
-- it before the change that journals them), to be looked at `grace` ms from now by Redis's own
-- clock: the writer's and the drainers' clocks may disagree, and a score that a skewed drainer
-- finds due at once would let it drop the entry before the writer's change has run.
--
-- KEYS[1] index of events journals (zset: journal key → when to look at it) <prefix>:{event-journals}
--
-- ARGV[1] the journal key (the member)
-- ARGV[2] grace (ms)
--
-- The score always grows (by a thousandth of a ms at least), even for two announcements in one
-- microsecond: forgetEventJournal's compare-and-drop must see every announcement after its read.
-- Returns the new score (as ZSCORE gives it).
local t = redis.call('TIME')
local score = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000 + tonumber(ARGV[2])
local old = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
if old and old >= score then score = old + 0.001 end
redis.call('ZADD', KEYS[1], score, ARGV[1])
return redis.call('ZSCORE', KEYS[1], ARGV[1])
