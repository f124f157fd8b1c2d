-- The control schema: the tenant registry and the clinic API keys.
-- Applied inside the control schema (search_path is set for the transaction).

CREATE TABLE tenants (
    id            uuid PRIMARY KEY,
    slug          text NOT NULL UNIQUE CHECK (slug ~ '^[a-z][a-z0-9_]{2,39}$'),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- Where the tenant's data lives: a configured cluster and a schema in it.
    cluster       text NOT NULL,
    schema_name   text NOT NULL,
    status        text NOT NULL DEFAULT 'active'
                  CHECK (status IN ('active', 'suspended', 'deleted')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (cluster, schema_name)
);

CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    -- SHA-256 of the whole key; the key itself is never stored.
    key_hash    bytea NOT NULL UNIQUE,
    -- The first characters of the key, so people can tell keys apart.
    prefix      text NOT NULL,
    label       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE INDEX api_keys_tenant ON api_keys (tenant_id);
