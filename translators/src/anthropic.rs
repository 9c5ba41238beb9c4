//! Anthropic Messages API ⇄ OpenAI chat completions.
