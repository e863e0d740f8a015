//! `GET /ring`: the members, their states, zones, token ownership and
//! heartbeat age, as HTML (or JSON with `Accept: application/json`);
//! `POST /ring` with the form field `forget=<id>` removes a member.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use cairn_common::status::{CodedError, ServiceError};
use serde::Serialize;

use crate::RingAccess;
use crate::state::Command;

#[derive(Serialize)]
struct MemberJson {
    id: String,
    address: String,
    zone: String,
    state: &'static str,
    healthy: bool,
    heartbeat_age_seconds: f64,
    tokens: usize,
    ownership: f64,
    registered_timestamp: i64,
}

#[derive(Serialize)]
struct RingJson {
    leader: Option<String>,
    applied_index: u64,
    members: Vec<MemberJson>,
}

fn describe(ring: &dyn RingAccess) -> RingJson {
    let view = ring.view();
    let snap = view.snapshot();
    let health = view.health();
    let own = snap.ownership();
    RingJson {
        leader: snap.leader.clone(),
        applied_index: snap.applied,
        members: snap
            .members()
            .iter()
            .zip(own)
            .map(|(m, share)| MemberJson {
                id: m.id.clone(),
                address: m.addr.clone(),
                zone: m.zone.clone(),
                state: m.state.as_str(),
                healthy: health.is_healthy(m),
                heartbeat_age_seconds: health.age_ms(m) as f64 / 1000.0,
                tokens: m.tokens.len(),
                ownership: share,
                registered_timestamp: m.registered_ms / 1000,
            })
            .collect(),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("application/json"))
}

async fn page(State(ring): State<Arc<dyn RingAccess>>, headers: HeaderMap) -> Response {
    let desc = describe(ring.as_ref());
    if wants_json(&headers) {
        return axum::Json(desc).into_response();
    }
    let mut rows = String::new();
    for m in &desc.members {
        let leader = if desc.leader.as_deref() == Some(m.id.as_str()) { " (leader)" } else { "" };
        rows.push_str(&format!(
            "<tr><td>{id}{leader}</td><td>{addr}</td><td>{zone}</td><td>{state}</td><td>{health}</td>\
             <td>{age:.1}s</td><td>{tokens}</td><td>{own:.1}%</td>\
             <td><form method=\"post\"><input type=\"hidden\" name=\"forget\" value=\"{id}\">\
             <button type=\"submit\">Forget</button></form></td></tr>\n",
            id = escape(&m.id),
            addr = escape(&m.address),
            zone = escape(&m.zone),
            state = m.state,
            health = if m.healthy { "healthy" } else { "UNHEALTHY" },
            age = m.heartbeat_age_seconds,
            tokens = m.tokens,
            own = m.ownership * 100.0,
        ));
    }
    Html(format!(
        "<!DOCTYPE html>\n<html><head><title>Cairn ring</title></head><body>\n<h1>Ingester ring</h1>\n\
         <p>Leader: {leader}. Applied log index: {applied}.</p>\n<table border=\"1\" cellpadding=\"4\">\n\
         <tr><th>Instance</th><th>Address</th><th>Zone</th><th>State</th><th>Health</th>\
         <th>Heartbeat age</th><th>Tokens</th><th>Ownership</th><th></th></tr>\n{rows}</table>\n\
         <p>Forgetting removes a member from the ring: do it only for an ingester that is gone for good.</p>\n\
         </body></html>\n",
        leader = escape(desc.leader.as_deref().unwrap_or("unknown")),
        applied = desc.applied_index,
    ))
    .into_response()
}

async fn forget(State(ring): State<Arc<dyn RingAccess>>, headers: HeaderMap, body: String) -> Response {
    let id = form_urlencoded::parse(body.as_bytes()).find(|(k, _)| k == "forget").map(|(_, v)| v.into_owned());
    let Some(id) = id.filter(|i| !i.is_empty()) else {
        return ServiceError::bad_data("expected the form field forget=<instance id>").into_response();
    };
    match ring.propose(Command::Forget { id: id.clone() }).await {
        Ok(()) if wants_json(&headers) => {
            axum::Json(serde_json::json!({"status": "success", "forgotten": id})).into_response()
        }
        Ok(()) => Redirect::to("/ring").into_response(),
        Err(e) => e.to_service_error().into_response(),
    }
}

pub fn routes(ring: Arc<dyn RingAccess>) -> Router {
    Router::new().route("/ring", axum::routing::get(page).post(forget)).with_state(ring)
}
