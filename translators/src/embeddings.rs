//! `POST /v1/embeddings`: OpenAI's contract (spec `CreateEmbeddingRequest` / `CreateEmbeddingResponse`) and
//! its translation to Ollama's native `POST /api/embed` (research `ingress.md` §3).
//!
//! Per backend kind:
//! - **OpenAI-kind**: pass-through (rename the model with
//!   [`responses::passthrough::rename_model`](crate::responses::passthrough::rename_model)); meter with
//!   [`extract_usage`].
//! - **Ollama**: [`parse_request`] → [`encode_ollama`] (one body per batch of at most `max_batch` inputs)
//!   → the gateway posts each to [`OLLAMA_EMBED_PATH`] → [`decode_ollama`] merges and re-indexes them.
//!   Upstream error bodies have the chat shape: map them with [`ollama::map_error`](crate::ollama::map_error).
//! - **Anthropic**: no embeddings API. Nothing here; the gateway answers 404 `model_not_found` with a
//!   message saying Anthropic models do not serve embeddings.
//!
//! Invariants:
//! - `encoding_format: "base64"` (the official SDKs' default) is honoured: each vector becomes the standard
//!   base64 of its little-endian `f32` bytes, which is what the SDKs decode. Returning floats instead
//!   would silently give the caller wrong vectors.
//! - `dimensions` is forwarded; a backend that ignores it is an error, never a full-width vector.
//! - Token-array inputs are refused (`param: "input"`): Ollama takes only text.
//! - Metering: `prompt_tokens = total_tokens = Σ prompt_eval_count`. Vectors never go to the ledger.

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::TranslateError;
use crate::openai::Usage;

/// OpenAI-kind path, appended to a base URL ending in `/v1`.
pub const EMBEDDINGS_PATH: &str = "/embeddings";
/// Ollama native path, appended to the Ollama base URL.
pub const OLLAMA_EMBED_PATH: &str = "/api/embed";
/// Most inputs OpenAI accepts in one request (and the default Ollama batch size).
pub const MAX_INPUTS: usize = 2048;

/// `encoding_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncodingFormat {
    /// JSON arrays of numbers (the API's default when the field is absent).
    #[default]
    Float,
    /// Standard base64 of little-endian `f32`s (the official SDKs' default).
    Base64,
}

/// A validated embeddings request.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsRequest {
    /// The client's `model`.
    pub model: String,
    /// The texts, in order (a single string becomes one item).
    pub input: Vec<String>,
    pub encoding_format: EncodingFormat,
    pub dimensions: Option<u64>,
    pub user: Option<String>,
}

/// Parses and validates an embeddings body. Unknown fields are tolerated (the spec forbids them, but
/// SDKs add fields faster than we ship).
///
/// Errors: `InvalidRequest` for a missing/empty `model` or `input`, more than [`MAX_INPUTS`] inputs, a
/// bad `encoding_format` or `dimensions`; `Unsupported` (`param: "input"`) for token arrays.
pub fn parse_request(body: &[u8]) -> Result<EmbeddingsRequest, TranslateError> {
    let root: Map<String, Value> = serde_json::from_slice(body).map_err(|e| TranslateError::InvalidRequest {
        message: format!("request body is not a valid JSON object: {e}").into(),
        param: None,
    })?;
    let model = match root.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => return Err(TranslateError::invalid("model is required and must be a non-empty string", "model")),
    };
    let input = match root.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(TranslateError::invalid("input must not be an empty array", "input"))
        }
        Some(Value::Array(items)) => {
            if items.len() > MAX_INPUTS {
                return Err(TranslateError::invalid(
                    format!("input may hold at most {MAX_INPUTS} items, got {}", items.len()),
                    "input",
                ));
            }
            let mut texts = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) => texts.push(s.clone()),
                    Value::Number(_) | Value::Array(_) => {
                        return Err(TranslateError::unsupported(
                            "token-array input is not supported for this model; send text",
                            "input",
                        ))
                    }
                    _ => return Err(TranslateError::invalid("input items must be strings", "input")),
                }
            }
            texts
        }
        _ => return Err(TranslateError::invalid("input is required: a string or an array of strings", "input")),
    };
    let encoding_format = match root.get("encoding_format") {
        None | Some(Value::Null) => EncodingFormat::Float,
        Some(Value::String(f)) if f == "float" => EncodingFormat::Float,
        Some(Value::String(f)) if f == "base64" => EncodingFormat::Base64,
        Some(_) => {
            return Err(TranslateError::invalid("encoding_format must be `float` or `base64`", "encoding_format"))
        }
    };
    let dimensions = match root.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(d) if d >= 1 => Some(d),
            _ => return Err(TranslateError::invalid("dimensions must be an integer of at least 1", "dimensions")),
        },
    };
    let user = match root.get("user") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) => Some(u.clone()),
        Some(_) => return Err(TranslateError::invalid("user must be a string", "user")),
    };
    Ok(EmbeddingsRequest { model, input, encoding_format, dimensions, user })
}

/// What the gateway decided about the Ollama call.
#[derive(Debug, Clone)]
pub struct OllamaEmbedOptions<'a> {
    /// The model name Ollama knows (gateway prefix stripped).
    pub upstream_model: &'a str,
    /// Ollama's `truncate`. `false` (recommended) makes over-long inputs an error, as at OpenAI; `true` makes
    /// Ollama cut them to the context length silently.
    pub truncate: bool,
    /// `keep_alive` from config (a Go duration or seconds), as for chat.
    pub keep_alive: Option<&'a str>,
    /// Most inputs per upstream call (at least 1; [`MAX_INPUTS`] when unsure).
    pub max_batch: usize,
}

/// `POST /api/embed` body.
#[derive(Debug, Serialize)]
struct OllamaEmbedRequest<'a> {
    model: &'a str,
    input: &'a [String],
    truncate: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keep_alive: Option<crate::ollama::wire::KeepAlive<'a>>,
}

/// The Ollama bodies for `req`, one per batch of at most `opts.max_batch` inputs, in input order. `user`
/// has no Ollama equivalent and is dropped.
pub fn encode_ollama(req: &EmbeddingsRequest, opts: &OllamaEmbedOptions) -> Vec<Bytes> {
    req.input
        .chunks(opts.max_batch.max(1))
        .map(|batch| {
            let body = OllamaEmbedRequest {
                model: opts.upstream_model,
                input: batch,
                truncate: opts.truncate,
                dimensions: req.dimensions,
                keep_alive: opts.keep_alive.map(crate::ollama::wire::KeepAlive::from_config),
            };
            // Serializing strings and integers cannot fail.
            Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
        })
        .collect()
}

/// `POST /api/embed` answer (`api/types.go` `EmbedResponse`); durations are ignored.
#[derive(Debug, Deserialize)]
struct OllamaEmbedResponse {
    #[serde(default)]
    embeddings: Option<Vec<Vec<f32>>>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    error: Option<Value>,
}

/// Merges the Ollama answers (one per body of [`encode_ollama`], same order) into the OpenAI response for
/// the client's `req`.
///
/// Errors: `Json` for a body that is not JSON; `Protocol` when the answers hold a different number of
/// vectors than inputs, or an `error`; `Unsupported` (`param: "dimensions"`) when the backend ignored
/// `dimensions`.
pub fn decode_ollama(bodies: &[&[u8]], req: &EmbeddingsRequest) -> Result<EmbeddingsResponse, TranslateError> {
    let mut data = Vec::with_capacity(req.input.len());
    let mut prompt_tokens = 0u64;
    for body in bodies {
        let answer: OllamaEmbedResponse =
            serde_json::from_slice(body).map_err(|source| TranslateError::Json { at: "ollama /api/embed", source })?;
        if let Some(error) = answer.error.filter(|e| !e.is_null()) {
            let message = match error {
                Value::String(s) => s,
                other => other.to_string(),
            };
            return Err(TranslateError::Protocol(format!("ollama /api/embed: {message}").into()));
        }
        prompt_tokens = prompt_tokens.saturating_add(answer.prompt_eval_count.unwrap_or(0));
        for vector in answer.embeddings.unwrap_or_default() {
            if let Some(dimensions) = req.dimensions {
                if vector.len() as u64 != dimensions {
                    return Err(TranslateError::unsupported(
                        format!(
                            "the backend returned {}-dimensional vectors and cannot honour dimensions={dimensions}",
                            vector.len()
                        ),
                        "dimensions",
                    ));
                }
            }
            let index = data.len();
            data.push(Embedding {
                object: OBJECT_EMBEDDING.to_owned(),
                index,
                embedding: encode(vector, req.encoding_format),
            });
        }
    }
    if data.len() != req.input.len() {
        return Err(TranslateError::Protocol(
            format!("ollama /api/embed returned {} vectors for {} inputs", data.len(), req.input.len()).into(),
        ));
    }
    Ok(EmbeddingsResponse {
        object: "list".to_owned(),
        data,
        model: req.model.clone(),
        usage: EmbeddingsUsage { prompt_tokens, total_tokens: prompt_tokens },
    })
}

fn encode(vector: Vec<f32>, format: EncodingFormat) -> EmbeddingVector {
    match format {
        EncodingFormat::Float => EmbeddingVector::Float(vector),
        EncodingFormat::Base64 => EmbeddingVector::Base64(base64_f32_le(&vector)),
    }
}

/// Standard, padded base64 of the little-endian bytes of `vector` (what openai-python and openai-node
/// decode with `np.frombuffer(..., dtype="float32")` / `Float32Array`).
pub fn base64_f32_le(vector: &[f32]) -> String {
    let mut bytes = Vec::with_capacity(vector.len() * 4);
    for x in vector {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `object` of each vector.
pub const OBJECT_EMBEDDING: &str = "embedding";

/// `CreateEmbeddingResponse`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EmbeddingsResponse {
    /// Always `list`.
    pub object: String,
    pub data: Vec<Embedding>,
    /// The model the client asked for.
    pub model: String,
    pub usage: EmbeddingsUsage,
}

impl EmbeddingsResponse {
    /// The JSON body.
    pub fn to_bytes(&self) -> Bytes {
        // Finite floats and strings cannot fail to serialize; a NaN from a broken backend becomes `null`.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Usage in hub terms, for the ledger (no completion tokens).
    pub fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.usage.prompt_tokens,
            completion_tokens: 0,
            total_tokens: self.usage.total_tokens,
            ..Usage::default()
        }
    }
}

/// One vector (`Embedding`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Embedding {
    /// Always `embedding`.
    pub object: String,
    /// Position of the input this vector belongs to.
    pub index: usize,
    pub embedding: EmbeddingVector,
}

/// The vector as floats or as base64.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}

/// `usage` of an embeddings response.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct EmbeddingsUsage {
    pub prompt_tokens: u64,
    pub total_tokens: u64,
}

/// The usage of a passed-through OpenAI-kind embeddings body (`None` when absent or malformed); the body
/// itself is forwarded untouched. Only `usage` is parsed (vectors are skipped, not built).
pub fn extract_usage(body: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    struct Body {
        #[serde(default)]
        usage: Option<Wire>,
    }
    #[derive(Deserialize)]
    struct Wire {
        #[serde(default)]
        prompt_tokens: Option<u64>,
        #[serde(default)]
        total_tokens: Option<u64>,
    }
    let usage = serde_json::from_slice::<Body>(body).ok()?.usage?;
    let prompt = usage.prompt_tokens.unwrap_or(0);
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: 0,
        total_tokens: usage.total_tokens.unwrap_or(prompt),
        ..Usage::default()
    })
}

#[cfg(test)]
mod tests;
