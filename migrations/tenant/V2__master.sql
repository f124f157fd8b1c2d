-- The tenant's own copy of one master release, priced against by its
-- encounters. Filled by recept from the control schema, never edited here.

CREATE TABLE master_items (
    code                 text NOT NULL,
    kind                 text NOT NULL CHECK (kind IN ('procedure', 'drug', 'disease')),
    name                 text NOT NULL,
    points               integer,
    unit_price_centiyen  bigint,
    valid_from           date NOT NULL,
    valid_to             date,
    PRIMARY KEY (code, valid_from)
);

CREATE INDEX master_items_kind_name ON master_items (kind, name);

-- Which release the copy is; NULL until one is copied. Locked by rollouts
-- (FOR UPDATE) and by pricing (FOR SHARE) so no encounter sees a copy
-- half-way between two releases.
CREATE TABLE master_meta (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    release     text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO master_meta (release) VALUES (NULL);
