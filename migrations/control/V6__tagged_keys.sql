-- Keys issued from now on carry a tag (an HMAC of their random part under
-- clinic.key_secret) that recept checks in memory before any lookup. Keys
-- issued before have none; they stay valid, and recept holds the hashes of
-- the unrevoked ones in memory so that an untagged key it does not know is
-- refused without a registry read.
ALTER TABLE recept.api_keys ADD COLUMN tagged boolean NOT NULL DEFAULT false;

-- The untagged keys still in use, read at start-up and every minute.
CREATE INDEX api_keys_untagged ON recept.api_keys (key_hash)
    WHERE NOT tagged AND revoked_at IS NULL;
