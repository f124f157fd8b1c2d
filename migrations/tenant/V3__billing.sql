-- Patients and their insurances, encounters priced from the master copy,
-- payments, monthly claims, and the idempotency keys of writes.
-- Money and points are integers; yen are whole yen.

CREATE TABLE patients (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    name_kana   text,
    birth_date  date NOT NULL,
    sex         text NOT NULL CHECK (sex IN ('male', 'female', 'other')),
    phone       text,
    address     text,
    notes       text,
    -- Bumped by every change; the ETag.
    version     integer NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX patients_name ON patients (name);
CREATE INDEX patients_name_kana ON patients (name_kana);

CREATE TABLE insurances (
    id              uuid PRIMARY KEY,
    patient_id      uuid NOT NULL REFERENCES patients (id) ON DELETE CASCADE,
    insurer_number  text NOT NULL,
    symbol          text,
    number          text,
    copay_rate      smallint NOT NULL CHECK (copay_rate IN (10, 20, 30)),
    valid_from      date NOT NULL,
    valid_to        date,
    CHECK (valid_to IS NULL OR valid_to >= valid_from)
);

CREATE INDEX insurances_patient ON insurances (patient_id, valid_from);

CREATE TABLE encounters (
    id              uuid PRIMARY KEY,
    patient_id      uuid NOT NULL REFERENCES patients (id),
    date            date NOT NULL,
    department      text,
    doctor          text,
    notes           text,
    -- The insurance valid on `date`, if any, and what it made the patient pay.
    insurance_id    uuid REFERENCES insurances (id),
    insurer_number  text,
    copay_rate      smallint NOT NULL CHECK (copay_rate IN (10, 20, 30, 100)),
    total_points    integer NOT NULL CHECK (total_points >= 0),
    charge_yen      integer NOT NULL CHECK (charge_yen >= 0),
    -- The master release the lines were priced from.
    master_release  text,
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'voided')),
    void_reason     text,
    voided_at       timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX encounters_patient_date ON encounters (patient_id, date, id);
CREATE INDEX encounters_date ON encounters (date);

CREATE TABLE encounter_lines (
    encounter_id  uuid NOT NULL REFERENCES encounters (id),
    line_no       smallint NOT NULL,
    code          text NOT NULL,
    kind          text NOT NULL,
    name          text NOT NULL,
    quantity      integer NOT NULL CHECK (quantity > 0),
    points        integer NOT NULL CHECK (points >= 0),
    PRIMARY KEY (encounter_id, line_no)
);

CREATE TABLE encounter_diagnoses (
    encounter_id  uuid NOT NULL REFERENCES encounters (id),
    position      smallint NOT NULL,
    code          text NOT NULL,
    name          text NOT NULL,
    PRIMARY KEY (encounter_id, position)
);

CREATE TABLE payments (
    id            uuid PRIMARY KEY,
    encounter_id  uuid NOT NULL REFERENCES encounters (id),
    patient_id    uuid NOT NULL REFERENCES patients (id),
    amount_yen    integer NOT NULL CHECK (amount_yen > 0),
    method        text NOT NULL CHECK (method IN ('cash', 'card', 'other')),
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX payments_encounter ON payments (encounter_id);
CREATE INDEX payments_patient ON payments (patient_id);

-- One claim per patient, insurer and month.
CREATE TABLE claims (
    id              uuid PRIMARY KEY,
    patient_id      uuid NOT NULL REFERENCES patients (id),
    insurer_number  text NOT NULL,
    month           date NOT NULL CHECK (extract(day FROM month) = 1),
    total_points    integer NOT NULL,
    visit_days      integer NOT NULL,
    charge_yen      integer NOT NULL,
    diagnoses       text[] NOT NULL,
    status          text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'confirmed')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    confirmed_at    timestamptz,
    UNIQUE (patient_id, insurer_number, month)
);

CREATE INDEX claims_month ON claims (month, status);

CREATE TABLE claim_encounters (
    claim_id      uuid NOT NULL REFERENCES claims (id) ON DELETE CASCADE,
    encounter_id  uuid NOT NULL REFERENCES encounters (id),
    PRIMARY KEY (claim_id, encounter_id)
);

CREATE INDEX claim_encounters_encounter ON claim_encounters (encounter_id);

-- The first response to each Idempotency-Key, stored in the same
-- transaction as the write it describes.
CREATE TABLE idempotency_keys (
    key           text PRIMARY KEY,
    route         text NOT NULL,
    request_hash  bytea NOT NULL,
    status        smallint,
    response      jsonb,
    etag          text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
