"""A front desk's day, driven through a client generated from the served
OpenAPI document (tests/client/run.sh generates it, then runs this).

It fails when the document and the server disagree: a status the document
does not list raises (the client is built with raise_on_unexpected_status),
a field the document requires but the server leaves out, or of another type,
fails to parse, and a field the server sends but the document does not name
is caught by `documented` below.
"""

import csv
import datetime
import io
import os
import sys

import attrs

from recept_client import AuthenticatedClient
from recept_client.api.claims import confirm_claim, export_claims, generate_claims, get_claim, list_claims
from recept_client.api.clinic import get_tenant
from recept_client.api.encounters import create_encounter, get_encounter, list_encounters, void_encounter
from recept_client.api.master import list_master_items
from recept_client.api.patients import create_patient, get_patient, get_patient_balance, update_patient
from recept_client.api.payments import create_payment
from recept_client.models import (
    Balance,
    Claim,
    ClaimList,
    ClaimWithEncounters,
    Encounter,
    EncounterPage,
    GenerateBody,
    InsuranceBody,
    ItemBody,
    ItemPage,
    Kind,
    Method,
    NewEncounterBody,
    NewPatientBody,
    NewPaymentBody,
    PatchPatientBody,
    Patient,
    Payment,
    Problem,
    Sex,
    TenantView,
    VoidBody,
)

VISIT_DAY = datetime.date(2026, 6, 10)
MONTH = "2026-06"


def documented(value, path="response"):
    """`value` as the document describes it: no field it does not name."""
    if attrs.has(type(value)):
        extra = getattr(value, "additional_properties", {})
        assert not extra, f"{path} has fields the document does not name: {sorted(extra)}"
        for field in attrs.fields(type(value)):
            documented(getattr(value, field.name), f"{path}.{field.name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            documented(item, f"{path}[{i}]")
    return value


def expect(kind, response, status):
    """The parsed body of `response`, which must have `status` and be a `kind`."""
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.content!r}"
    assert isinstance(response.parsed, kind), f"expected a {kind.__name__}, got {response.parsed!r}"
    return documented(response.parsed)


def drug_points(unit_price_yen, quantity):
    """DESIGN.md's drug line: 15 yen or less is 1 point, else 1 + ceil((yen - 15) / 10)."""
    centiyen = round(float(unit_price_yen) * 100) * quantity
    if centiyen <= 1500:
        return 1
    return 1 + -(-(centiyen - 1500) // 1000)


def main():
    client = AuthenticatedClient(
        base_url=os.environ["CLINIC_URL"],
        token=os.environ["DEMO_KEY"],
        raise_on_unexpected_status=True,
    )
    with client:
        tenant = expect(TenantView, get_tenant.sync_detailed(client=client), 200)
        print(f"clinic {tenant.slug}, master {tenant.master_release}")

        # The morning: what can be billed today.
        procedures = expect(
            ItemPage,
            list_master_items.sync_detailed(client=client, kind=Kind.PROCEDURE, on=VISIT_DAY, limit=5),
            200,
        )
        drugs = expect(ItemPage, list_master_items.sync_detailed(client=client, kind=Kind.DRUG, on=VISIT_DAY, limit=5), 200)
        diseases = expect(
            ItemPage, list_master_items.sync_detailed(client=client, kind=Kind.DISEASE, on=VISIT_DAY, limit=1), 200
        )
        procedure, drug, disease = procedures.items[0], drugs.items[0], diseases.items[0]

        # A new patient with her insurance card; the desk's retry replays.
        new_patient = NewPatientBody(
            name="山田 花子",
            name_kana="ヤマダ ハナコ",
            birth_date=datetime.date(1985, 4, 2),
            sex=Sex.FEMALE,
            insurances=[
                InsuranceBody(insurer_number="06123456", symbol="12", number="345", copay_rate=30, valid_from=datetime.date(2024, 6, 1))
            ],
        )
        created = create_patient.sync_detailed(client=client, body=new_patient, idempotency_key="frontdesk-patient-1")
        patient = expect(Patient, created, 201)
        again = expect(
            Patient, create_patient.sync_detailed(client=client, body=new_patient, idempotency_key="frontdesk-patient-1"), 201
        )
        assert again.id == patient.id, "a retry with the same Idempotency-Key registered the patient twice"

        # She moved: the change goes in with the ETag last seen.
        etag = created.headers["etag"]
        changed = update_patient.sync_detailed(
            patient.id, client=client, body=PatchPatientBody(phone="03-1234-5678"), if_match=etag
        )
        patient = expect(Patient, changed, 200)
        assert patient.phone == "03-1234-5678" and patient.version == 2
        stale = update_patient.sync_detailed(patient.id, client=client, body=PatchPatientBody(phone="0"), if_match=etag)
        expect(Problem, stale, 412)
        expect(Patient, get_patient.sync_detailed(patient.id, client=client), 200)

        # The visit: a first consultation, a drug for 3 units, one diagnosis.
        visit = expect(
            Encounter,
            create_encounter.sync_detailed(
                client=client,
                body=NewEncounterBody(
                    patient_id=patient.id,
                    date=VISIT_DAY,
                    items=[ItemBody(code=procedure.code, quantity=1), ItemBody(code=drug.code, quantity=3)],
                    diagnoses=[disease.code],
                    department="内科",
                ),
                idempotency_key="frontdesk-visit-1",
            ),
            201,
        )
        points = procedure.points + drug_points(drug.unit_price_yen, 3)
        assert visit.total_points == points, (visit.total_points, points)
        # 30 % of points x 10 yen, to the nearest 10 yen (5 rounds up).
        assert visit.charge_yen == (points * 10 * 30 + 500) // 1000 * 10, visit.charge_yen
        assert [line.code for line in visit.lines] == [procedure.code, drug.code]
        expect(Encounter, get_encounter.sync_detailed(visit.id, client=client), 200)

        # She pays at the window.
        payment = expect(
            Payment,
            create_payment.sync_detailed(
                client=client,
                body=NewPaymentBody(encounter_id=visit.id, amount_yen=visit.charge_yen, method=Method.CASH),
                idempotency_key="frontdesk-payment-1",
            ),
            201,
        )
        assert payment.amount_yen == visit.charge_yen
        balance = expect(Balance, get_patient_balance.sync_detailed(patient.id, client=client), 200)
        assert (balance.billed_yen, balance.paid_yen, balance.outstanding_yen) == (visit.charge_yen, visit.charge_yen, 0)
        overpaid = create_payment.sync_detailed(
            client=client, body=NewPaymentBody(encounter_id=visit.id, amount_yen=1, method=Method.CASH)
        )
        expect(Problem, overpaid, 409)

        # A visit entered by mistake is voided, not edited.
        mistake = expect(
            Encounter,
            create_encounter.sync_detailed(
                client=client,
                body=NewEncounterBody(patient_id=patient.id, date=VISIT_DAY, items=[ItemBody(code=procedure.code, quantity=1)]),
            ),
            201,
        )
        voided = expect(Encounter, void_encounter.sync_detailed(mistake.id, client=client, body=VoidBody(reason="entered twice")), 200)
        assert voided.status == "voided"
        page = expect(EncounterPage, list_encounters.sync_detailed(client=client, patient_id=patient.id), 200)
        assert {e.id for e in page.encounters} == {visit.id, mistake.id}

        # The month's end: claims generated, checked, confirmed, exported.
        drafts = expect(ClaimList, generate_claims.sync_detailed(client=client, body=GenerateBody(month=MONTH)), 200)
        mine = [c for c in drafts.claims if c.patient_id == patient.id]
        assert len(mine) == 1, mine
        claim = mine[0]
        assert (claim.total_points, claim.visit_days, claim.charge_yen, claim.status) == (points, 1, visit.charge_yen, "draft")
        assert claim.diagnoses == [disease.code]
        full = expect(ClaimWithEncounters, get_claim.sync_detailed(claim.id, client=client), 200)
        assert [e.id for e in full.encounters] == [visit.id]
        confirmed = expect(Claim, confirm_claim.sync_detailed(claim.id, client=client), 200)
        assert confirmed.status == "confirmed" and confirmed.confirmed_at is not None
        expect(Problem, confirm_claim.sync_detailed(claim.id, client=client), 409)
        expect(Problem, void_encounter.sync_detailed(visit.id, client=client, body=VoidBody()), 409)
        listed = expect(ClaimList, list_claims.sync_detailed(client=client, month=MONTH), 200)
        assert claim.id in {c.id for c in listed.claims}

        exported = export_claims.sync_detailed(client=client, month=MONTH)
        assert exported.status_code == 200
        assert exported.headers["content-type"].startswith("text/csv")
        # The route answers CSV or, with format=uke, the claims file: a
        # client reads the body by the content type it was sent with.
        text = exported.parsed if isinstance(exported.parsed, str) else exported.content.decode("utf-8")
        rows = list(csv.DictReader(io.StringIO(text)))
        row = next(r for r in rows if r["claim_id"] == str(claim.id))
        assert (int(row["total_points"]), int(row["charge_yen"]), row["insurer_number"]) == (points, visit.charge_yen, "06123456")

        # What the document promises for mistakes.
        expect(Problem, get_patient.sync_detailed(visit.id, client=client), 404)
        expect(Problem, list_claims.sync_detailed(client=client, month="2026-13"), 422)
    print(f"front desk day: patient {patient.id}, visit {visit.id} ({points} points, {visit.charge_yen} yen), claim {claim.id} confirmed and exported")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"front desk day failed: {e}", file=sys.stderr)
        raise
