-- Master data releases (fee schedule, drug prices, disease names) and the
-- rollouts that upgrade tenants' copies of them.

CREATE TABLE master_releases (
    version     text PRIMARY KEY CHECK (version ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    items       integer NOT NULL
);

-- One row per code and validity period; a fee revision is a second row.
-- Money is integral: a drug's unit price is kept in hundredths of a yen.
CREATE TABLE master_items (
    version              text NOT NULL REFERENCES master_releases (version),
    code                 text NOT NULL,
    kind                 text NOT NULL CHECK (kind IN ('procedure', 'drug', 'disease')),
    name                 text NOT NULL,
    points               integer,
    unit_price_centiyen  bigint,
    valid_from           date NOT NULL,
    valid_to             date,
    PRIMARY KEY (version, code, valid_from)
);

-- The difference between two releases, computed once and applied to every
-- tenant that moves between them. `from_version` '' is "no release".
CREATE TABLE master_diff_sets (
    from_version  text NOT NULL,
    to_version    text NOT NULL REFERENCES master_releases (version),
    removed       integer NOT NULL,
    added         integer NOT NULL,
    PRIMARY KEY (from_version, to_version)
);

CREATE TABLE master_diffs (
    from_version         text NOT NULL,
    to_version           text NOT NULL,
    op                   "char" NOT NULL CHECK (op IN ('-', '+')),
    code                 text NOT NULL,
    kind                 text NOT NULL,
    name                 text NOT NULL,
    points               integer,
    unit_price_centiyen  bigint,
    valid_from           date NOT NULL,
    valid_to             date,
    FOREIGN KEY (from_version, to_version) REFERENCES master_diff_sets ON DELETE CASCADE
);

CREATE INDEX master_diffs_pair ON master_diffs (from_version, to_version, op);

CREATE TABLE master_rollouts (
    id           uuid PRIMARY KEY,
    version      text NOT NULL REFERENCES master_releases (version),
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);

CREATE TABLE master_rollout_tenants (
    rollout_id    uuid NOT NULL REFERENCES master_rollouts (id),
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    state         text NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'done', 'skipped', 'failed')),
    from_version  text,
    error         text,
    started_at    timestamptz,
    finished_at   timestamptz,
    PRIMARY KEY (rollout_id, tenant_id)
);

-- The release whose copy the tenant holds (the tenant's own master_meta is
-- the truth; this is for listing and reports).
ALTER TABLE tenants ADD COLUMN master_release text REFERENCES master_releases (version);
