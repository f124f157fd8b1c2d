//! The clinic API's OpenAPI document, generated from the handlers' own
//! annotations and types so it cannot drift, and a plain HTML page that
//! renders it for people (no scripts, nothing fetched from elsewhere).
//!
//! Long because the document is one value: the operations it lists, the
//! answers every route shares, the links between operations and the
//! fix-ups utoipa cannot express are added here, each once.

use actix_web::HttpResponse;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, PathItem, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::clinic::{self, claims, diseases, encounters, patients};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "recept clinic API",
        description = "Patients, encounters priced from the clinic's own master copy, payments and \
                       monthly claims. Authenticate with `Authorization: Bearer <clinic API key>`; \
                       the key alone decides the clinic. Every error is application/problem+json."
    ),
    paths(
        clinic::tenant,
        clinic::master_items,
        patients::create,
        patients::search,
        patients::show,
        patients::update,
        patients::balance,
        diseases::list,
        diseases::add,
        diseases::update,
        diseases::delete,
        encounters::create,
        encounters::list,
        encounters::show,
        encounters::void,
        encounters::pay,
        claims::generate,
        claims::list,
        claims::show,
        claims::confirm,
        claims::export,
    ),
    modifiers(&ClinicKey, &EveryRoute, &Links),
    tags(
        (name = "clinic", description = "The caller's own clinic"),
        (name = "master", description = "The clinic's copy of the master data"),
        (name = "patients"),
        (name = "encounters", description = "Visits, priced on entry"),
        (name = "payments"),
        (name = "claims", description = "Monthly insurance claims"),
    )
)]
pub struct ClinicApi;

struct ClinicKey;

impl Modify for ClinicKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "clinic_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Answers any route may give besides its own: a query string or headers
/// over their limits (`414`, `431`) before its handler runs, and for every
/// route behind the clinic key the refusals of authentication and admission
/// (`401`, `403`, `429`, `503`) and a statement past its timeout (`504`);
/// for every route with a body, a body too slow (`408`) or too long
/// (`413`), malformed (`400`) or not JSON (`415`); for every route with an
/// id in its path, an object not found (`404`); for every route that takes
/// a body, a query or a header, a validation failure (`422`).
/// Written once here rather than in each handler's annotation.
struct EveryRoute;

fn problem(description: String) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build(),
    )
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.post,
        &mut item.patch,
        &mut item.put,
        &mut item.delete,
    ]
    .into_iter()
    .flatten()
}

impl Modify for EveryRoute {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let everywhere = [
            (
                "414",
                format!(
                    "The query string is longer than {} bytes",
                    super::logging::MAX_QUERY_BYTES
                ),
            ),
            (
                "431",
                format!(
                    "The request headers are larger than {} bytes",
                    super::logging::MAX_HEADER_BYTES
                ),
            ),
        ];
        let behind_the_key = [
            ("401", "Missing, unknown or revoked API key"),
            ("403", "The clinic is suspended"),
            (
                "429",
                "This clinic already has as many requests in flight as its share allows; \
                 retry after Retry-After",
            ),
            (
                "503",
                "Busy or unavailable for a moment; retry after Retry-After (milliseconds in \
                 `retry_after_ms`)",
            ),
            (
                "504",
                "A statement ran past the clinic statement timeout and was cancelled",
            ),
        ];
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                (false, &mut item.get),
                (true, &mut item.post),
                (true, &mut item.patch),
                (true, &mut item.put),
                (true, &mut item.delete),
            ];
            for (writes, operation) in operations {
                let Some(operation) = operation else {
                    continue;
                };
                let secured = operation.security.is_some();
                let responses = &mut operation.responses.responses;
                for (status, description) in &everywhere {
                    responses.insert((*status).into(), problem(description.clone()));
                }
                if secured {
                    for (status, description) in behind_the_key {
                        responses.insert(status.into(), problem(description.into()));
                    }
                }
                // The answers of parsing, kept where a route says more.
                let params = operation.parameters.as_deref().unwrap_or_default();
                let has_path_id = params
                    .iter()
                    .any(|p| matches!(p.parameter_in, ParameterIn::Path));
                let has_body = operation.request_body.is_some();
                if has_body {
                    responses
                        .entry("400".into())
                        .or_insert_with(|| problem("Malformed JSON".into()));
                    responses
                        .entry("415".into())
                        .or_insert_with(|| problem("The body is not JSON".into()));
                }
                if has_path_id {
                    responses
                        .entry("404".into())
                        .or_insert_with(|| problem("No such object in this clinic".into()));
                }
                if has_body
                    || params
                        .iter()
                        .any(|p| !matches!(p.parameter_in, ParameterIn::Path))
                {
                    responses.entry("422".into()).or_insert_with(|| {
                        problem("Validation failed: `errors` names the fields".into())
                    });
                }
                if has_body {
                    responses.insert(
                        "408".into(),
                        problem(
                            "`urn:recept:problem:body-timeout`: the request body did not arrive \
                             within `server.body_timeout_ms`; the connection is closed"
                                .into(),
                        ),
                    );
                    responses
                        .entry("413".into())
                        .or_insert_with(|| problem("The body is larger than the limit".into()));
                }
                if secured && writes {
                    responses.insert(
                        "500".into(),
                        problem(
                            "`urn:recept:problem:outcome-unknown`: the connection to the \
                             database broke during the commit and whether the write was stored \
                             could not be learned. Look it up before sending it again, or send \
                             it again with the same Idempotency-Key"
                                .into(),
                        ),
                    );
                }
            }
        }
    }
}

/// The document's links: from each operation that creates or lists an
/// object to the operations that take its id, so that a client (and the
/// fuzzer's stateful phase) can walk patient -> visit -> payment or void,
/// and month -> claims -> confirm -> export, with real ids.
struct Links;

/// One link: (from operation, its status, link name, to operation,
/// parameters, request body), values being OpenAPI runtime expressions.
type LinkSpec = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    Option<serde_json::Value>,
);

/// The id of the object the response is.
const ID: &str = "$response.body#/id";

fn link_specs() -> Vec<LinkSpec> {
    use serde_json::json;
    vec![
        (
            "create_patient",
            "201",
            "GetPatient",
            "get_patient",
            &[("id", ID)],
            None,
        ),
        (
            "create_patient",
            "201",
            "UpdatePatient",
            "update_patient",
            &[("id", ID), ("If-Match", "$response.header.ETag")],
            None,
        ),
        (
            "create_patient",
            "201",
            "GetBalance",
            "get_patient_balance",
            &[("id", ID)],
            None,
        ),
        (
            "create_patient",
            "201",
            "RecordVisit",
            "create_encounter",
            &[],
            Some(json!({ "patient_id": ID })),
        ),
        (
            "create_patient",
            "201",
            "ListVisits",
            "list_encounters",
            &[("patient_id", ID)],
            None,
        ),
        (
            "create_patient",
            "201",
            "ListDiseases",
            "list_patient_diseases",
            &[("id", ID)],
            None,
        ),
        (
            "create_patient",
            "201",
            "AddDisease",
            "add_patient_disease",
            &[("id", ID)],
            None,
        ),
        (
            "add_patient_disease",
            "201",
            "UpdateDisease",
            "update_patient_disease",
            &[("id", "$response.body#/patient_id"), ("disease_id", ID)],
            None,
        ),
        (
            "add_patient_disease",
            "201",
            "RemoveDisease",
            "delete_patient_disease",
            &[("id", "$response.body#/patient_id"), ("disease_id", ID)],
            None,
        ),
        (
            "update_patient_disease",
            "200",
            "RemoveDisease",
            "delete_patient_disease",
            &[("id", "$response.body#/patient_id"), ("disease_id", ID)],
            None,
        ),
        (
            "update_patient",
            "200",
            "GetPatient",
            "get_patient",
            &[("id", ID)],
            None,
        ),
        (
            "update_patient",
            "200",
            "UpdateAgain",
            "update_patient",
            &[("id", ID), ("If-Match", "$response.header.ETag")],
            None,
        ),
        (
            "get_patient",
            "200",
            "UpdatePatient",
            "update_patient",
            &[("id", ID), ("If-Match", "$response.header.ETag")],
            None,
        ),
        (
            "get_patient",
            "200",
            "RecordVisit",
            "create_encounter",
            &[],
            Some(json!({ "patient_id": ID })),
        ),
        (
            "create_encounter",
            "201",
            "GetVisit",
            "get_encounter",
            &[("id", ID)],
            None,
        ),
        (
            "create_encounter",
            "201",
            "VoidVisit",
            "void_encounter",
            &[("id", ID)],
            None,
        ),
        (
            "create_encounter",
            "201",
            "PayInFull",
            "create_payment",
            &[],
            Some(json!({
                "encounter_id": "$response.body#/id",
                "amount_yen": "$response.body#/charge_yen",
            })),
        ),
        (
            "create_encounter",
            "201",
            "GetBalance",
            "get_patient_balance",
            &[("id", "$response.body#/patient_id")],
            None,
        ),
        (
            "create_payment",
            "201",
            "GetVisit",
            "get_encounter",
            &[("id", "$response.body#/encounter_id")],
            None,
        ),
        (
            "create_payment",
            "201",
            "GetBalance",
            "get_patient_balance",
            &[("id", "$response.body#/patient_id")],
            None,
        ),
        (
            "generate_claims",
            "200",
            "GetFirst",
            "get_claim",
            &[("id", "$response.body#/claims/0/id")],
            None,
        ),
        (
            "generate_claims",
            "200",
            "ConfirmFirst",
            "confirm_claim",
            &[("id", "$response.body#/claims/0/id")],
            None,
        ),
        (
            "generate_claims",
            "200",
            "ListMonth",
            "list_claims",
            &[("month", "$response.body#/month")],
            None,
        ),
        (
            "generate_claims",
            "200",
            "ExportMonth",
            "export_claims",
            &[("month", "$response.body#/month")],
            None,
        ),
        (
            "confirm_claim",
            "200",
            "GetClaim",
            "get_claim",
            &[("id", ID)],
            None,
        ),
        (
            "confirm_claim",
            "200",
            "ExportMonth",
            "export_claims",
            &[("month", "$response.body#/month")],
            None,
        ),
    ]
}

impl Modify for Links {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (from, status, name, to, parameters, body) in link_specs() {
            let operation = openapi
                .paths
                .paths
                .values_mut()
                .flat_map(operations_mut)
                .find(|op| op.operation_id.as_deref() == Some(from))
                .unwrap_or_else(|| panic!("a link starts at {from}, which is no operation"));
            let Some(RefOr::T(response)) = operation.responses.responses.get_mut(status) else {
                panic!("a link starts at {from} {status}, which it does not answer");
            };
            let mut link = LinkBuilder::new().operation_id(to);
            for (parameter, expression) in parameters {
                link = link.parameter(*parameter, *expression);
            }
            response
                .links
                .insert(name.into(), RefOr::T(link.request_body(body).build()));
        }
    }
}

/// The document as JSON. utoipa 5 writes a link's fields in snake case
/// (`operation_id`); OpenAPI spells them in camel case (`operationId`), so
/// they are renamed here, where the document is serialized.
pub fn document_value() -> serde_json::Value {
    let mut document =
        serde_json::to_value(ClinicApi::openapi()).expect("the OpenAPI document serializes");
    let operations = document
        .get_mut("paths")
        .and_then(|p| p.as_object_mut())
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut());
    for operation in operations {
        let responses = operation
            .get_mut("responses")
            .and_then(|r| r.as_object_mut())
            .into_iter()
            .flatten();
        for (_, response) in responses {
            let links = response.get_mut("links").and_then(|l| l.as_object_mut());
            for link in links.into_iter().flat_map(|l| l.values_mut()) {
                let Some(link) = link.as_object_mut() else {
                    continue;
                };
                for (snake, camel) in [
                    ("operation_id", "operationId"),
                    ("operation_ref", "operationRef"),
                    ("request_body", "requestBody"),
                ] {
                    if let Some(value) = link.remove(snake) {
                        link.insert(camel.into(), value);
                    }
                }
            }
        }
    }
    document
}

/// The document as pretty-printed JSON, for `recept openapi`.
pub fn document_json() -> String {
    serde_json::to_string_pretty(&document_value()).expect("JSON serializes")
}

/// `GET /v1/openapi.json`
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(document_value())
}

/// `GET /v1/docs`: the document as a readable page.
pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(render(&ClinicApi::openapi()))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn operations(item: &PathItem) -> Vec<(&'static str, &Operation)> {
    [
        ("GET", &item.get),
        ("POST", &item.post),
        ("PUT", &item.put),
        ("PATCH", &item.patch),
        ("DELETE", &item.delete),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.as_ref().map(|op| (method, op)))
    .collect()
}

fn render(api: &utoipa::openapi::OpenApi) -> String {
    let mut html = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>recept clinic API</title><style>\
         body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}\
         code,pre{background:#f4f4f4;padding:0 .2rem}h3{margin-bottom:.2rem}\
         .m{display:inline-block;min-width:4rem;font-weight:bold}</style></head><body>",
    );
    html.push_str(&format!(
        "<h1>{}</h1><p>{}</p><p>Machine-readable: <a href=\"/v1/openapi.json\">/v1/openapi.json</a></p>",
        escape(&api.info.title),
        escape(api.info.description.as_deref().unwrap_or(""))
    ));
    for (path, item) in api.paths.paths.iter() {
        for (method, op) in operations(item) {
            html.push_str(&format!(
                "<h3><span class=\"m\">{method}</span><code>{}</code></h3>",
                escape(path)
            ));
            if let Some(description) = op.description.as_deref().or(op.summary.as_deref()) {
                html.push_str(&format!("<p>{}</p>", escape(description)));
            }
            if let Some(params) = &op.parameters {
                html.push_str("<ul>");
                for p in params {
                    html.push_str(&format!(
                        "<li><code>{}</code> ({}){}</li>",
                        escape(&p.name),
                        match p.parameter_in {
                            ParameterIn::Query => "query",
                            ParameterIn::Path => "path",
                            ParameterIn::Header => "header",
                            ParameterIn::Cookie => "cookie",
                        },
                        p.description
                            .as_deref()
                            .map(|d| format!(": {}", escape(d)))
                            .unwrap_or_default()
                    ));
                }
                html.push_str("</ul>");
            }
            if let Some(body) = &op.request_body {
                for (content_type, content) in &body.content {
                    html.push_str(&format!(
                        "<p>Body <code>{}</code>: {}</p>",
                        escape(content_type),
                        schema_name(&content.schema)
                    ));
                }
            }
            html.push_str("<ul>");
            for (status, response) in &op.responses.responses {
                let description = match response {
                    RefOr::T(r) => escape(&r.description),
                    RefOr::Ref(r) => escape(&r.ref_location),
                };
                html.push_str(&format!("<li><b>{status}</b> {description}</li>"));
            }
            html.push_str("</ul>");
        }
    }
    html.push_str("</body></html>");
    html
}

fn schema_name(schema: &Option<RefOr<utoipa::openapi::schema::Schema>>) -> String {
    match schema {
        Some(RefOr::Ref(r)) => escape(r.ref_location.rsplit('/').next().unwrap_or("")),
        Some(RefOr::T(_)) => "inline schema".into(),
        None => "none".into(),
    }
}
