-- Moving a tenant between clusters: the move in progress, and the old
-- copies left behind for a grace period.

-- The cluster a move is copying the tenant to; its clinic requests are
-- answered 503 while this is set.
ALTER TABLE tenants ADD COLUMN moving_to text;

CREATE TABLE moved_copies (
    cluster      text NOT NULL,
    schema_name  text NOT NULL,
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    moved_at     timestamptz NOT NULL DEFAULT now(),
    dropped_at   timestamptz,
    PRIMARY KEY (cluster, schema_name)
);
