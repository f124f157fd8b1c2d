-- Every admin write, and soft deletion of tenants.

CREATE TABLE audit_log (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    -- Who: the admin's self-declared name (X-Admin-Actor) or 'admin'.
    actor        text NOT NULL,
    action       text NOT NULL,
    target       text,
    detail       jsonb,
    -- From where: the admin client's address.
    remote_addr  text
);

CREATE INDEX audit_log_at ON audit_log (at DESC);

ALTER TABLE tenants ADD COLUMN deleted_at timestamptz;
ALTER TABLE tenants ADD COLUMN purged_at timestamptz;
