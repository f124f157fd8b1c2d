-- Idempotency keys expire (clinic.idempotency_ttl_s): expired ones are
-- found by age and removed a few at a time by later writes.
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
