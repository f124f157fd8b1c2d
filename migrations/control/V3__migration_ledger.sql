-- Where each tenant's schema is, and a ledger of migration runs.

-- The newest tenant migration applied to the tenant's schema. Written in
-- the same transaction as the migration when the tenant lives on the
-- control cluster; 0 until a run records it.
ALTER TABLE tenants ADD COLUMN schema_version integer NOT NULL DEFAULT 0;

CREATE TABLE migration_runs (
    id              uuid PRIMARY KEY,
    target_version  integer NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    tenants         integer NOT NULL DEFAULT 0,
    migrated        integer NOT NULL DEFAULT 0,
    current         integer NOT NULL DEFAULT 0,
    failed          integer NOT NULL DEFAULT 0
);

CREATE TABLE migration_ledger (
    run_id          uuid NOT NULL REFERENCES migration_runs (id),
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    version_before  integer NOT NULL,
    version_after   integer NOT NULL,
    started_at      timestamptz NOT NULL,
    duration_ms     double precision NOT NULL,
    attempts        integer NOT NULL,
    error           text,
    PRIMARY KEY (run_id, tenant_id)
);

-- Tenants already on this cluster: record the version their schema holds.
DO $$
DECLARE
    t record;
    v integer;
BEGIN
    FOR t IN SELECT id, schema_name FROM tenants LOOP
        IF to_regclass(format('%I.refinery_schema_history', t.schema_name)) IS NOT NULL THEN
            EXECUTE format('SELECT coalesce(max(version), 0) FROM %I.refinery_schema_history',
                           t.schema_name) INTO v;
            UPDATE tenants SET schema_version = v WHERE id = t.id;
        END IF;
    END LOOP;
END
$$;
