-- A one-shot shelve (shelved until the incident's alarms return to normal, at most until
-- shelved_until): TRUE while one is on; NULL otherwise, and in rows of events written before it.
ALTER TABLE incidents ADD COLUMN shelved_until_clear BOOLEAN;
