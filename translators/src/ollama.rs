//! Ollama native `/api/chat` ⇄ OpenAI chat completions.
