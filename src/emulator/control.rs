//! The emulator's own API: inject faults and inspect sessions.
//!
//! - `GET /emulator/faults` lists the active rules; `POST` adds one rule or a list (JSON
//!   `{"kind": "close", "code": 3005, "at_ms": 2000, "count": 1}`, or `{"spec": "close:3005@2s"}`);
//!   `DELETE` clears them.
//! - `GET /emulator/sessions` lists every session with its parameters, counters and close.

use std::sync::Arc;

use axum::Json;
use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::faults::FaultRule;
use super::state::State;
use super::token::error;

/// A rule as JSON, or in the flag syntax.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RuleInput {
    Spec { spec: String },
    Rule(FaultRule),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RulesInput {
    One(RuleInput),
    Many(Vec<RuleInput>),
}

pub async fn list_faults(AxState(state): AxState<Arc<State>>) -> Response {
    Json(state.lock().faults.list()).into_response()
}

pub async fn add_faults(AxState(state): AxState<Arc<State>>, body: String) -> Response {
    let input: RulesInput = match serde_json::from_str(&body) {
        Ok(i) => i,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid fault JSON: {e}")),
    };
    let inputs = match input {
        RulesInput::One(r) => vec![r],
        RulesInput::Many(rs) => rs,
    };
    let mut rules = Vec::new();
    for input in inputs {
        match input {
            RuleInput::Rule(r) => rules.push(r),
            RuleInput::Spec { spec } => match spec.parse::<FaultRule>() {
                Ok(r) => rules.push(r),
                Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
            },
        }
    }
    let mut inner = state.lock();
    for rule in &rules {
        tracing::debug!(fault = %rule.fault, count = rule.count, "fault added");
        inner.faults.add(rule.clone());
    }
    (
        StatusCode::CREATED,
        Json(json!({ "added": rules.len(), "rules": inner.faults.list() })),
    )
        .into_response()
}

pub async fn clear_faults(AxState(state): AxState<Arc<State>>) -> Response {
    state.lock().faults.clear();
    StatusCode::NO_CONTENT.into_response()
}

pub async fn sessions(AxState(state): AxState<Arc<State>>) -> Response {
    Json(state.sessions()).into_response()
}
