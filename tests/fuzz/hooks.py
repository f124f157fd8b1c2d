"""Test data for tests/fuzz/schemathesis.sh, loaded by schemathesis.

The document says what a request must look like; which master codes a
clinic holds, and which dates its master copy and a patient's insurance
cover, are the clinic's data and no schema can say them. So beside every
body schemathesis generates, these hooks also offer the same body tied to
the demo clinic's data: master codes from the sample releases in
tenants/master, visit dates in one month those codes are valid in, and an
insurance valid on those dates. Half of the generated bodies stay as
generated; the other half reach pricing, claims and payments, and the
stateful phase (following the document's links) walks patient -> visit ->
payment or void and month -> claims -> confirm with real ids.
"""

import csv
import itertools
import pathlib
import zlib

import schemathesis
from hypothesis import strategies as st

MASTER = pathlib.Path(__file__).resolve().parents[2] / "tenants" / "master"
# Visits fall in this month; the codes below are valid in all of it.
MONTH = "2026-06"


def open_codes():
    """Codes of every sample release valid from before MONTH on, by kind."""
    by_release = []
    for release in sorted(MASTER.glob("*.csv")):
        with release.open(encoding="utf-8") as f:
            codes = {
                (row["code"], row["kind"])
                for row in csv.DictReader(f)
                if row["valid_from"] <= f"{MONTH}-01" and not row["valid_to"]
            }
        by_release.append(codes)
    common = set.intersection(*by_release)
    kinds = {}
    for code, kind in sorted(common):
        kinds.setdefault(kind, []).append(code)
    return kinds


CODES = open_codes()
REQUESTS = itertools.count(1)
BILLABLE = CODES["procedure"] + CODES["drug"]
DRUGS = CODES["drug"]
DISEASES = CODES["disease"]


def pick(options, seed):
    # crc32, not hash(): Python salts str hashes per process, and a run
    # must replay from its seed alone.
    return options[zlib.crc32(str(seed).encode()) % len(options)]


def insured(patient):
    """The patient with one insurance valid from before MONTH, open-ended."""
    patient = dict(patient)
    insurances = patient.get("insurances") or [{}]
    first = insurances[0] if isinstance(insurances[0], dict) else {}
    patient["insurances"] = [
        {
            "insurer_number": first.get("insurer_number") or "06123456",
            "copay_rate": first.get("copay_rate") or 30,
            "valid_from": "2024-06-01",
        }
    ]
    if patient.get("birth_date", "2000-01-01") > "2025-12-31":
        patient["birth_date"] = "1980-04-01"
    return patient


def in_the_clinics_master(visit):
    """The visit on a day of MONTH, billing and diagnosing demo codes."""
    visit = dict(visit)
    day = 1 + zlib.crc32(str(visit.get("notes")).encode()) % 30
    visit["date"] = f"{MONTH}-{day:02d}"
    visit["items"] = [
        {"code": pick(BILLABLE, (i, item)), "quantity": min(item.get("quantity", 1), 30)}
        for i, item in enumerate(visit.get("items") or [{"quantity": 1}])
    ]
    visit["diagnoses"] = [pick(DISEASES, (i, d)) for i, d in enumerate(visit.get("diagnoses") or [])][:3]
    units = []
    for i, unit in enumerate(visit.get("drug_units") or []):
        if not isinstance(unit, dict):
            continue
        unit = dict(unit)
        drugs = [d for d in unit.get("drugs") or [] if isinstance(d, dict)] or [{"quantity": 1}]
        unit["drugs"] = [
            {"code": pick(DRUGS, (i, j, d)), "quantity": min(d.get("quantity") or 1, 30)}
            for j, d in enumerate(drugs[:5])
        ]
        if unit.get("kind") not in ("internal", "as_needed", "external"):
            unit["kind"] = "internal"
        if unit["kind"] == "external":
            unit.pop("days", None)
        elif not isinstance(unit.get("days"), int) or not 1 <= unit["days"] <= 365:
            unit["days"] = 7
        units.append(unit)
    visit["drug_units"] = units[:3]
    return visit


def disease_in_the_clinics_master(disease):
    """A disease of the demo master, started in MONTH, its outcome dated
    when it has one."""
    disease = dict(disease, code=pick(DISEASES, disease.get("code")), start_date=f"{MONTH}-01")
    if disease.get("outcome") in (None, "continuing"):
        disease.pop("outcome_date", None)
    else:
        disease["outcome_date"] = f"{MONTH}-15"
    return disease


def coherent_outcome(change):
    """A change whose outcome and date agree: an ended disease is dated in
    MONTH, a continuing one is not."""
    change = dict(change)
    outcome = change.get("outcome")
    if outcome is None:
        change.pop("outcome_date", None)
    elif outcome == "continuing":
        change.pop("outcome_date", None)
    else:
        change["outcome_date"] = f"{MONTH}-20"
    return change


def payable(payment):
    """A payment small enough for most visits' charge (a few hundred yen)."""
    amount = payment.get("amount_yen")
    if not isinstance(amount, int):
        return payment
    return dict(payment, amount_yen=1 + amount % 100)


def claimed_month(body):
    return dict(body, month=MONTH)


def positive(change):
    """`change` applied to what was generated to be valid, and only to that:
    a value generated to be invalid (schemathesis wraps it with what it
    broke) must stay invalid."""

    def apply(generated, *args):
        if hasattr(generated, "map_value"):
            if generated.meta is not None:
                return generated
            return generated.map_value(lambda value: change(value, *args) if isinstance(value, dict) else value)
        return change(generated, *args) if isinstance(generated, dict) else generated

    return apply


def beside(strategy, change):
    """The generated bodies: about one in four as generated, the others
    changed by `change` (hypothesis draws small integers most, so 0..2
    change and only 3 keeps)."""
    changed = positive(change)
    return st.tuples(strategy, st.integers(0, 3)).map(
        lambda drawn: drawn[0] if drawn[1] == 3 else changed(drawn[0])
    )


def fresh_key(headers, suffix):
    """The documented client's Idempotency-Key: new for each new request.
    (A key reused with another body is refused with 422, as it should be,
    but that says nothing about the request's shape.)"""
    key = headers.get("Idempotency-Key")
    if key is None:
        return headers
    return dict(headers, **{"Idempotency-Key": f"{key[:160]}.{suffix}"})


@schemathesis.hook("before_generate_headers").apply_to(
    method="POST", path_regex="^/v1/(patients|encounters|payments|patients/\\{id\\}/diseases)$"
)
def fresh_idempotency_keys(context, strategy):
    # A counter, not a drawn value: hypothesis draws the same small values
    # over and over, and a run with one seed still counts the same way.
    keyed = positive(fresh_key)
    return strategy.map(lambda headers: keyed(headers, next(REQUESTS)))


@schemathesis.hook("before_generate_body").apply_to(method="POST", path="/v1/patients")
def patients_with_insurance(context, strategy):
    return beside(strategy, insured)


@schemathesis.hook("before_generate_body").apply_to(method="POST", path="/v1/encounters")
def visits_in_the_clinics_master(context, strategy):
    return beside(strategy, in_the_clinics_master)


@schemathesis.hook("before_generate_body").apply_to(method="POST", path="/v1/payments")
def payments_within_the_charge(context, strategy):
    return beside(strategy, payable)


@schemathesis.hook("before_generate_body").apply_to(method="POST", path="/v1/claims/generate")
def the_visits_month(context, strategy):
    return beside(strategy, claimed_month)


@schemathesis.hook("before_generate_body").apply_to(method="POST", path="/v1/patients/{id}/diseases")
def diseases_in_the_clinics_master(context, strategy):
    return beside(strategy, disease_in_the_clinics_master)


@schemathesis.hook("before_generate_body").apply_to(method="PATCH", path="/v1/patients/{id}/diseases/{disease_id}")
def coherent_disease_changes(context, strategy):
    return beside(strategy, coherent_outcome)


@schemathesis.deserializer("application/octet-stream")
def claims_file(ctx, response):
    """The claims file (RECEIPTC.UKE, Shift_JIS bytes), as the document's
    string: each byte one character, so that its schema is checked too."""
    return response.content.decode("latin-1")
