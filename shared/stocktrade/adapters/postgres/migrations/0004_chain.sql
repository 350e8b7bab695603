-- Delivery: outbox leases.
-- A relay leases the rows it is about to publish (claimed_until) in a short transaction, so it
-- never holds a transaction open while it talks to Pub/Sub, and two relays never publish the
-- same row at the same time. A relay that dies leaves a lease that simply expires. attempts and
-- last_error say why a row is still unpublished.
ALTER TABLE outbox
    ADD COLUMN claimed_until TIMESTAMPTZ,
    ADD COLUMN attempts      INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    ADD COLUMN last_error    TEXT;
