//! Model name → route: which provider serves a requested model, under which upstream name.
//!
//! `provider/model` is explicit and always wins when the prefix names an enabled provider; the rest is the
//! upstream model unchanged (Ollama names contain `/` and `:`). Bare names go through the routes in order.

use std::sync::Arc;

use crate::config::{Config, ProviderConfig};

/// Where a request goes.
#[derive(Debug, Clone)]
pub struct Route {
    pub provider: Arc<ProviderConfig>,
    /// The model name sent upstream.
    pub upstream_model: String,
}

/// Why no route was found.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    UnknownModel(String),
    #[error("`model` must not be empty.")]
    EmptyModel,
}

/// Resolves `requested` against the enabled providers and the routes.
pub fn resolve(config: &Config, requested: &str) -> Result<Route, RouteError> {
    if requested.is_empty() {
        return Err(RouteError::EmptyModel);
    }
    if let Some((prefix, rest)) = requested.split_once('/') {
        if let Some(provider) = config.provider(prefix) {
            if rest.is_empty() {
                return Err(RouteError::UnknownModel(requested.to_owned()));
            }
            return Ok(Route { provider: provider.clone(), upstream_model: rest.to_owned() });
        }
    }
    for rule in &config.routes {
        if rule.pattern.matches(requested) {
            if let Some(provider) = config.provider(&rule.provider) {
                let upstream_model = rule.model.clone().unwrap_or_else(|| requested.to_owned());
                return Ok(Route { provider: provider.clone(), upstream_model });
            }
        }
    }
    Err(RouteError::UnknownModel(requested.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MapEnv;

    fn config() -> Config {
        let yaml = r#"
providers:
  openai: {kind: openai, api_key: sk-test}
  anthropic: {kind: anthropic, api_key: sk-ant}
  ollama: {kind: ollama}
routes:
  - {match: fast, provider: anthropic, model: claude-haiku-4-5}
  - {match: "llama*", provider: ollama}
"#;
        Config::from_yaml_str(yaml, &MapEnv::default()).unwrap()
    }

    #[test]
    fn explicit_prefix_keeps_the_rest_unchanged() {
        let r = resolve(&config(), "ollama/hf.co/org/repo:Q4_K_M").unwrap();
        assert_eq!(r.provider.id, "ollama");
        assert_eq!(r.upstream_model, "hf.co/org/repo:Q4_K_M");
    }

    #[test]
    fn aliases_globs_and_defaults() {
        let cfg = config();
        let fast = resolve(&cfg, "fast").unwrap();
        assert_eq!((fast.provider.id.as_str(), fast.upstream_model.as_str()), ("anthropic", "claude-haiku-4-5"));
        assert_eq!(resolve(&cfg, "llama3.2").unwrap().provider.id, "ollama");
        assert_eq!(resolve(&cfg, "gpt-4o-mini").unwrap().provider.id, "openai");
        assert_eq!(resolve(&cfg, "o3-mini").unwrap().provider.id, "openai");
        let claude = resolve(&cfg, "claude-sonnet-4-5").unwrap();
        assert_eq!((claude.provider.id.as_str(), claude.upstream_model.as_str()), ("anthropic", "claude-sonnet-4-5"));
    }

    #[test]
    fn unknown_models_and_unknown_prefixes_are_not_found() {
        let cfg = config();
        assert_eq!(resolve(&cfg, "mystery").unwrap_err(), RouteError::UnknownModel("mystery".into()));
        assert!(resolve(&cfg, "nope/gpt-4o").is_err());
        assert!(resolve(&cfg, "openai/").is_err());
        assert_eq!(resolve(&cfg, "").unwrap_err(), RouteError::EmptyModel);
    }
}
