//! `kind = "query"`: copies a query parameter into an attribute, e.g. a display name a
//! browser page chose (`/chat/lobby?name=ada` → `user` = `ada`). A browser cannot set
//! headers on a WebSocket request, so the query is where a page puts such a choice.
//!
//! The value is whatever the client sent: a preference, not an identity. So the filter
//! never replaces an attribute already set (a `user` a `bearer` filter verified wins),
//! and its value is bounded: at most `max-bytes` bytes (default 64) once decoded, no
//! control characters, or the request is refused with `400`. An `authorize` filter
//! counts any `user` attribute, so do not put a `query` filter that sets `user` before
//! one.

use serde::Deserialize;

use super::bearer::query_param;
use crate::request::{Attributes, Rejection, Request};

/// Longest value accepted by default, in bytes.
const DEFAULT_MAX_BYTES: usize = 64;

/// A `query` filter: `name` (the parameter, required), `attribute` (required),
/// `max-bytes` (default 64).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct QueryFilter {
    name: String,
    attribute: String,
    #[serde(default = "default_max_bytes")]
    max_bytes: usize,
}

fn default_max_bytes() -> usize {
    DEFAULT_MAX_BYTES
}

impl QueryFilter {
    /// Checks the keys' values.
    pub(super) fn validate(self) -> Result<Self, String> {
        if self.name.is_empty() || self.attribute.is_empty() {
            return Err("`name` and `attribute` must not be empty".to_owned());
        }
        if self.max_bytes == 0 {
            return Err("`max-bytes` must be at least 1".to_owned());
        }
        Ok(self)
    }

    pub(super) fn check(
        &self,
        request: &Request,
        attributes: &mut Attributes,
    ) -> Result<(), Rejection> {
        let Some(value) = query_param(&request.query, &self.name) else {
            return Ok(());
        };
        if value.len() > self.max_bytes || value.chars().any(char::is_control) {
            return Err(Rejection::new(
                400,
                format!(
                    "query parameter `{}` must be at most {} bytes without control characters",
                    self.name, self.max_bytes
                ),
            ));
        }
        if attributes.get(&self.attribute).is_none() {
            attributes.set(self.attribute.clone(), value);
        }
        Ok(())
    }
}
