-- The operator overlay (shelved | suppressed | out-of-service, NULL: none) and whether an
-- annunciation waits for acknowledgement (NULL: the row comes from an event written before these
-- fields): an incident whose every alarm is suppressed (inhibited, silenced, in maintenance) is
-- "suppressed" too, but no operator suppressed it and it may still need acknowledging.
ALTER TABLE incidents ADD COLUMN overlay TEXT;
ALTER TABLE incidents ADD COLUMN needs_ack BOOLEAN;
