//! `GET /v1/models` in Anthropic's shape, paginated like Anthropic's (`limit`, `after_id`, `before_id`).
//!
//! `{"data":[{"type":"model","id","display_name","created_at"}],"has_more","first_id","last_id"}`, newest
//! first (then by id, for a stable order). Claude Code's model picker reads this shape
//! (research note §0, decision 1); the OpenAI SDK's shape is served by the gateway otherwise.

use crate::error::TranslateError;
use crate::rfc3339::format_rfc3339;

use super::wire;

/// Anthropic's default page size.
pub const DEFAULT_LIMIT: usize = 20;
/// Anthropic's largest page size.
pub const MAX_LIMIT: usize = 1000;

/// One model the gateway can route to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    /// The id clients send as `model`.
    pub id: String,
    /// Unix seconds (0 when unknown: `1970-01-01T00:00:00Z`, as Anthropic allows).
    pub created: u64,
    /// Human-readable name; the id when `None`.
    pub display_name: Option<String>,
}

/// The pagination query of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelsQuery {
    /// Page size, 1..=[`MAX_LIMIT`].
    pub limit: usize,
    /// Return the models after this id.
    pub after_id: Option<String>,
    /// Return the models right before this id (wins over `after_id` only when `after_id` is absent).
    pub before_id: Option<String>,
}

impl Default for ModelsQuery {
    fn default() -> Self {
        Self { limit: DEFAULT_LIMIT, after_id: None, before_id: None }
    }
}

impl ModelsQuery {
    /// Parses a URL query string (without `?`); unknown keys (`beta=true`) are ignored.
    ///
    /// Errors: `InvalidRequest` with `param: "limit"` when `limit` is not an integer in 1..=1000.
    pub fn parse(query: &str) -> Result<Self, TranslateError> {
        let mut q = Self::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value);
            match key {
                "limit" => {
                    q.limit =
                        value.parse::<usize>().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
                            TranslateError::invalid("limit: Input should be between 1 and 1000", "limit")
                        })?;
                }
                "after_id" if !value.is_empty() => q.after_id = Some(value),
                "before_id" if !value.is_empty() => q.before_id = Some(value),
                _ => {}
            }
        }
        Ok(q)
    }
}

/// `%XX` and `+` decoding of one query value (invalid escapes are kept as they are).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One page of `entries` (any order; sorted newest first here).
///
/// `after_id`: the models after that id; `before_id`: the `limit` models right before it. An id that is
/// not in the list gives an empty page. `has_more`: more models exist beyond the page in the direction
/// of travel (after it, or before it with `before_id`). `first_id`/`last_id` are null on an empty page.
pub fn models_page(entries: &[ModelEntry], query: &ModelsQuery) -> wire::ModelList {
    let mut sorted: Vec<&ModelEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
    let limit = query.limit.clamp(1, MAX_LIMIT);
    let position = |id: &str| sorted.iter().position(|e| e.id == id);
    let (range, has_more) = match (&query.after_id, &query.before_id) {
        (Some(after), _) => match position(after) {
            Some(p) => {
                let start = p + 1;
                let end = (start + limit).min(sorted.len());
                (start..end, end < sorted.len())
            }
            None => (0..0, false),
        },
        (None, Some(before)) => match position(before) {
            Some(p) => {
                let start = p.saturating_sub(limit);
                (start..p, start > 0)
            }
            None => (0..0, false),
        },
        (None, None) => {
            let end = limit.min(sorted.len());
            (0..end, end < sorted.len())
        }
    };
    let data: Vec<wire::ModelInfo> = sorted[range]
        .iter()
        .map(|e| wire::ModelInfo {
            kind: "model",
            id: e.id.clone(),
            display_name: e.display_name.clone().unwrap_or_else(|| e.id.clone()),
            created_at: format_rfc3339(e.created),
        })
        .collect();
    wire::ModelList {
        first_id: data.first().map(|m| m.id.clone()),
        last_id: data.last().map(|m| m.id.clone()),
        has_more,
        data,
    }
}

/// [`models_page`] as the JSON body of the answer.
pub fn encode_models_page(entries: &[ModelEntry], query: &ModelsQuery) -> Vec<u8> {
    // Serializing plain strings and booleans into memory cannot fail.
    serde_json::to_vec(&models_page(entries, query)).unwrap_or_default()
}

#[cfg(test)]
mod tests;
