-- Each queued entry names the transaction that carries it, once it is in one. A transaction
-- was a range of entry IDs before; but IDs are not given in commit order (an event's entry is
-- written in the event's long transaction, an EDU's in a short one), so an entry committed
-- late could fall inside a range already sent, and be deleted unsent.
-- Keep in step with migrations/sqlite/0010_outbox_txn.sql.
ALTER TABLE federation_outbox ADD COLUMN txn_id TEXT;
CREATE INDEX federation_outbox_txn ON federation_outbox (destination, txn_id);
