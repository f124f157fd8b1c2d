-- The billing rules of a receipt computer: insurances say what kind they
-- are and the patient's income category, so the share and the monthly
-- ceiling follow from the rules (an explicit rate stays possible as an
-- override); drug lines belong to units; visits keep their charge before
-- and after the ceiling; patients have a disease list; the clinic has the
-- identity a claims file needs.

-- (Constraints are added apart from their columns: Citus refuses ADD
-- COLUMN with a constraint on a distributed table.)
ALTER TABLE insurances ADD COLUMN kind text;
ALTER TABLE insurances ADD CONSTRAINT insurances_kind
    CHECK (kind IN ('employee', 'national', 'late_elderly'));
ALTER TABLE insurances ADD COLUMN relation text;
ALTER TABLE insurances ADD CONSTRAINT insurances_relation
    CHECK (relation IN ('insured', 'dependent'));
ALTER TABLE insurances ADD COLUMN income_category text;
ALTER TABLE insurances ADD CONSTRAINT insurances_income_category
    CHECK (income_category IN ('a', 'i', 'u', 'e', 'o', 'genekinami_3', 'genekinami_2',
                               'genekinami_1', 'ippan', 'ippan_2', 'teishotoku_2', 'teishotoku_1'));
-- Insurances entered before the rules keep their typed rate as an override.
ALTER TABLE insurances ALTER COLUMN copay_rate DROP NOT NULL;
ALTER TABLE insurances ADD CONSTRAINT insurances_rate_or_kind
    CHECK (copay_rate IS NOT NULL OR kind IS NOT NULL);

-- Which rule gave the share; what the visit cost the patient before the
-- month's ceiling; the ceiling that applied to it, if any.
ALTER TABLE encounters ADD COLUMN copay_rule text NOT NULL DEFAULT 'override';
ALTER TABLE encounters ADD COLUMN charge_before_ceiling_yen integer NOT NULL DEFAULT 0;
ALTER TABLE encounters ADD CONSTRAINT encounters_charge_before_ceiling
    CHECK (charge_before_ceiling_yen >= 0);
ALTER TABLE encounters ADD COLUMN ceiling_yen integer;
UPDATE encounters SET charge_before_ceiling_yen = charge_yen,
    copay_rule = CASE WHEN copay_rate = 100 THEN 'uninsured' ELSE 'override' END;
CREATE INDEX encounters_month_order ON encounters (patient_id, insurer_number, date, id);

-- A drug line of a unit (剤): lines of one unit share `unit_no`; the unit's
-- points sit on its last line, the others hold 0.
ALTER TABLE encounter_lines ADD COLUMN unit_no smallint;
ALTER TABLE encounter_lines ADD COLUMN unit_kind text;
ALTER TABLE encounter_lines ADD CONSTRAINT encounter_lines_unit_kind
    CHECK (unit_kind IN ('internal', 'as_needed', 'external'));
ALTER TABLE encounter_lines ADD COLUMN unit_days smallint;
ALTER TABLE encounter_lines ADD CONSTRAINT encounter_lines_unit_days CHECK (unit_days > 0);

ALTER TABLE claims ADD COLUMN charge_before_ceiling_yen integer NOT NULL DEFAULT 0;
UPDATE claims SET charge_before_ceiling_yen = charge_yen;

CREATE TABLE patient_diseases (
    id            uuid PRIMARY KEY,
    patient_id    uuid NOT NULL REFERENCES patients (id),
    code          text NOT NULL,
    name          text NOT NULL,
    start_date    date NOT NULL,
    outcome       text NOT NULL DEFAULT 'continuing'
                  CHECK (outcome IN ('continuing', 'cured', 'died', 'stopped')),
    outcome_date  date,
    main          boolean NOT NULL DEFAULT false,
    suspected     boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((outcome = 'continuing') = (outcome_date IS NULL)),
    CHECK (outcome_date IS NULL OR outcome_date >= start_date)
);

CREATE INDEX patient_diseases_patient ON patient_diseases (patient_id, start_date);

ALTER TABLE clinic ADD COLUMN institution_code text;
ALTER TABLE clinic ADD COLUMN prefecture_code text;
ALTER TABLE clinic ADD COLUMN fee_table text;
ALTER TABLE clinic ADD COLUMN address text;
ALTER TABLE clinic ADD COLUMN phone text;
ALTER TABLE clinic ADD COLUMN profile_updated_at timestamptz;
