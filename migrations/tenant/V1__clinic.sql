-- The first tenant migration: the clinic's own profile, one row.
-- Applied inside the tenant's schema (search_path is set for the transaction);
-- no statement here names another schema.

CREATE TABLE clinic (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    slug        text NOT NULL,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
