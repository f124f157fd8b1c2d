//! The clinic API's OpenAPI document, generated from the handlers' own
//! annotations and types so it cannot drift, and a plain HTML page that
//! renders it for people (no scripts, nothing fetched from elsewhere).

use actix_web::HttpResponse;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{PathItem, RefOr};
use utoipa::{Modify, OpenApi};

use super::clinic::{self, claims, encounters, patients};

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
    modifiers(&ClinicKey, &EveryRoute),
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

/// Answers any route may give before its handler runs: a query string or
/// headers over their limits (`414`, `431`).
struct EveryRoute;

impl Modify for EveryRoute {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let too_long = ResponseBuilder::new()
            .description(format!(
                "The query string is longer than {} bytes",
                super::logging::MAX_QUERY_BYTES
            ))
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build();
        let headers_too_large = ResponseBuilder::new()
            .description(format!(
                "The request headers are larger than {} bytes",
                super::logging::MAX_HEADER_BYTES
            ))
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.put,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                let responses = &mut operation.responses.responses;
                responses.insert("414".into(), RefOr::T(too_long.clone()));
                responses.insert("431".into(), RefOr::T(headers_too_large.clone()));
            }
        }
    }
}

/// `GET /v1/openapi.json`
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ClinicApi::openapi())
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
