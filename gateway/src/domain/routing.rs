//! Model name → route: which deployments may serve a requested model, under which upstream names, and
//! how to retry across them.
//!
//! `provider/model` is explicit and always wins when the prefix names an enabled provider; the rest is the
//! upstream model unchanged (Ollama names contain `/` and `:`). Bare names go through the routes in order.

use std::sync::Arc;

use crate::domain::config::{Config, ProviderConfig, RetryPolicy};

/// One deployment a request may go to.
#[derive(Debug, Clone)]
pub struct RouteTarget {
    pub provider: Arc<ProviderConfig>,
    /// The model name sent upstream.
    pub upstream_model: String,
    pub weight: u32,
    pub priority: u32,
}

/// Where a request goes: targets sorted by priority, and the retry policy.
#[derive(Debug, Clone)]
pub struct Route {
    pub targets: Vec<RouteTarget>,
    pub retry: RetryPolicy,
}

impl Route {
    /// The preferred target (tests and single-target routes).
    pub fn primary(&self) -> &RouteTarget {
        &self.targets[0]
    }
}

/// Why no route was found.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    UnknownModel(String),
    #[error("`model` must not be empty.")]
    EmptyModel,
    /// The model names (by prefix or a built-in route) a provider that is not enabled.
    #[error("The model `{model}` cannot be served: provider `{provider}` is not enabled: {hint}.")]
    ProviderNotEnabled { model: String, provider: String, hint: String },
}

/// Resolves `requested` against the enabled providers and the routes.
pub fn resolve(config: &Config, requested: &str) -> Result<Route, RouteError> {
    if requested.is_empty() {
        return Err(RouteError::EmptyModel);
    }
    let not_enabled = |provider: &str| {
        config.unavailable_provider(provider).map(|p| RouteError::ProviderNotEnabled {
            model: requested.to_owned(),
            provider: p.id.clone(),
            hint: p.hint.clone(),
        })
    };
    if let Some((prefix, rest)) = requested.split_once('/') {
        if config.provider(prefix).is_none() {
            if let Some(e) = not_enabled(prefix) {
                return Err(e);
            }
        }
        if let Some(provider) = config.provider(prefix) {
            if rest.is_empty() {
                return Err(RouteError::UnknownModel(requested.to_owned()));
            }
            let target =
                RouteTarget { provider: provider.clone(), upstream_model: rest.to_owned(), weight: 1, priority: 0 };
            return Ok(Route { targets: vec![target], retry: config.default_retry });
        }
    }
    for rule in &config.routes {
        if !rule.pattern.matches(requested) {
            continue;
        }
        let mut targets: Vec<RouteTarget> = rule
            .targets
            .iter()
            .filter_map(|t| {
                let provider = config.provider(&t.provider)?;
                Some(RouteTarget {
                    provider: provider.clone(),
                    upstream_model: t.model.clone().unwrap_or_else(|| requested.to_owned()),
                    weight: t.weight,
                    priority: t.priority,
                })
            })
            .collect();
        if targets.is_empty() {
            continue;
        }
        targets.sort_by_key(|t| t.priority);
        return Ok(Route { targets, retry: rule.retry });
    }
    // A built-in route would have taken it, had its provider been enabled: say so.
    if let Some((_, provider)) = config.unavailable_routes.iter().find(|(p, _)| p.matches(requested)) {
        if let Some(e) = not_enabled(provider) {
            return Err(e);
        }
    }
    Err(RouteError::UnknownModel(requested.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::MapEnv;

    fn config() -> Config {
        let yaml = r#"
providers:
  openai: {kind: openai, api_key: sk-test}
  anthropic: {kind: anthropic, api_key: sk-ant}
  ollama: {kind: ollama}
routes:
  - {match: fast, provider: anthropic, model: claude-haiku-4-5}
  - {match: "llama*", provider: ollama}
  - match: smart
    targets:
      - {provider: anthropic, model: claude-sonnet-4-5}
      - {provider: openai, model: gpt-4.1}
      - {provider: ollama, model: llama3.2}
    retry: {attempts: 4, backoff_ms: 10}
"#;
        Config::from_yaml_str(yaml, &MapEnv::default()).unwrap()
    }

    #[test]
    fn explicit_prefix_keeps_the_rest_unchanged() {
        let r = resolve(&config(), "ollama/hf.co/org/repo:Q4_K_M").unwrap();
        assert_eq!(r.primary().provider.id, "ollama");
        assert_eq!(r.primary().upstream_model, "hf.co/org/repo:Q4_K_M");
        // Issue 11, item 14 changed this from no retry to the default policy (overloads tried twice).
        assert_eq!(r.retry, RetryPolicy::DEFAULT);
    }

    #[test]
    fn aliases_globs_and_defaults() {
        let cfg = config();
        let fast = resolve(&cfg, "fast").unwrap();
        assert_eq!(
            (fast.primary().provider.id.as_str(), fast.primary().upstream_model.as_str()),
            ("anthropic", "claude-haiku-4-5")
        );
        assert_eq!(resolve(&cfg, "llama3.2").unwrap().primary().provider.id, "ollama");
        assert_eq!(resolve(&cfg, "gpt-4o-mini").unwrap().primary().provider.id, "openai");
        assert_eq!(resolve(&cfg, "o3-mini").unwrap().primary().provider.id, "openai");
        let claude = resolve(&cfg, "claude-sonnet-4-5").unwrap();
        assert_eq!(claude.primary().upstream_model, "claude-sonnet-4-5");
    }

    #[test]
    fn fallback_targets_keep_their_order_and_retry_policy() {
        let r = resolve(&config(), "smart").unwrap();
        let order: Vec<_> = r.targets.iter().map(|t| (t.provider.id.as_str(), t.upstream_model.as_str())).collect();
        assert_eq!(order, [("anthropic", "claude-sonnet-4-5"), ("openai", "gpt-4.1"), ("ollama", "llama3.2")]);
        assert_eq!(r.retry.attempts, 4);
        assert_eq!(r.retry.backoff, std::time::Duration::from_millis(10));
    }

    #[test]
    fn unknown_models_and_unknown_prefixes_are_not_found() {
        let cfg = config();
        assert_eq!(resolve(&cfg, "mystery").unwrap_err(), RouteError::UnknownModel("mystery".into()));
        assert!(resolve(&cfg, "nope/gpt-4o").is_err());
        assert!(resolve(&cfg, "openai/").is_err());
        assert_eq!(resolve(&cfg, "").unwrap_err(), RouteError::EmptyModel);
    }

    /// Issue 11, item 16: a model whose provider is not enabled names the provider and the fix, by
    /// built-in route (`gpt-4o` → `openai`) and by explicit prefix, from the environment and from a file.
    #[test]
    fn a_provider_that_is_not_enabled_says_what_would_enable_it() {
        let cfg = Config::from_env(&MapEnv::default()).unwrap();
        for model in ["gpt-4o", "openai/gpt-4o"] {
            let err = resolve(&cfg, model).unwrap_err();
            assert!(matches!(err, RouteError::ProviderNotEnabled { .. }), "{model}: {err:?}");
            let text = err.to_string();
            assert!(text.contains("provider `openai` is not enabled: set `OPENAI_API_KEY`"), "{model}: {text}");
        }
        assert!(resolve(&cfg, "claude-sonnet-4-5").unwrap_err().to_string().contains("ANTHROPIC_API_KEY"));
        assert_eq!(resolve(&cfg, "mystery").unwrap_err(), RouteError::UnknownModel("mystery".into()));
        let yaml = "providers:\n  anthropic: {kind: anthropic}\n  ollama: {kind: ollama}\n";
        let cfg = Config::from_yaml_str(yaml, &MapEnv::default()).unwrap();
        let text = resolve(&cfg, "anthropic/claude-sonnet-4-5").unwrap_err().to_string();
        assert!(text.contains("provider `anthropic` is not enabled: set `providers.anthropic.api_key`"), "{text}");
        assert!(resolve(&cfg, "gpt-4o").unwrap_err().to_string().contains("add `providers.openai`"));
    }
}
