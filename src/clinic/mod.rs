//! The clinic's operations, one home each: register and change a patient,
//! record and void a visit, take a payment, keep a patient's disease list,
//! generate and confirm a month's claims. Each is a plain function over the clinic's own connection
//! (`pools::TenantConn`) with inputs already parsed into domain values,
//! and runs its writes in one transaction with its idempotency record
//! (`write.rs`). The HTTP handlers only extract, parse and map; no actix
//! here, no SQL text (that is `db/`), no rule of billing (that is
//! `billing/`).

mod claims;
mod claims_file;
mod diseases;
mod error;
mod input;
mod patients;
mod visits;
mod write;

pub use claims::{confirm_claim, export_claims_csv, generate_claims, ClaimList};
pub use claims_file::export_claims_uke;
pub use diseases::{
    add_disease, change_disease, remove_disease, DiseaseChange, NewDisease, Outcome,
};
pub use error::{ClinicError, FieldError, Invalid};
pub use input::{is_code, parse_date, plain_text, Month};
pub use patients::{etag, register_patient, update_patient, InsuranceInput, PatientChange};
pub use visits::{
    pay, record_visit, void_visit, NewPayment, NewVisit, PaymentMethod, VisitLine, VisitUnit,
};
pub use write::{IdempotencyKey, Written};
