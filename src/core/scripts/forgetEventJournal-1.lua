-- forgetEventJournal: drops an events journal from the index of journals to look at, only if
-- nobody announced a new change to it since the drainer read its entry (its score is still the
-- one read): a writer announces before its change, so a changed score means "look again".
--
-- KEYS[1] index of events journals (zset: journal key → when to look at it) <prefix>:{event-journals}
--
-- ARGV[1] the journal key (the member)
-- ARGV[2] its score as the drainer read it (exactly as Redis returned it)
--
-- Returns 1 when the entry was dropped, 0 when it changed meanwhile (kept).
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
