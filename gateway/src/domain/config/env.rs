//! Where configuration reads the environment from. Injectable so tests never touch the process
//! environment (linkerd's `Strings` pattern).

use std::collections::HashMap;

/// A source of environment variables.
pub trait EnvSource: Send + Sync {
    /// The value of `key`, or `None` when unset. Empty strings are returned as they are.
    fn get(&self, key: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

/// A fixed map of variables, for tests and embedding.
#[derive(Debug, Default, Clone)]
pub struct MapEnv(pub HashMap<String, String>);

impl MapEnv {
    /// Builds a source from `(key, value)` pairs.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
    }
}

impl EnvSource for MapEnv {
    fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
}

/// Expands `${VAR}` and `${VAR:-default}` in `input`. `$$` is a literal `$`.
/// Returns the names of variables that were unset and had no default.
pub fn expand(input: &str, env: &dyn EnvSource) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(input.len());
    let mut missing = Vec::new();
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body.find('}') else {
            out.push('$');
            rest = after;
            continue;
        };
        let expr = &body[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        match (env.get(name), default) {
            (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => missing.push(name.to_owned()),
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_set_unset_default_and_escape() {
        let env = MapEnv::from_pairs([("A", "1"), ("EMPTY", "")]);
        assert_eq!(expand("x${A}y", &env).unwrap(), "x1y");
        assert_eq!(expand("${B:-def}", &env).unwrap(), "def");
        assert_eq!(expand("${EMPTY:-def}", &env).unwrap(), "def");
        assert_eq!(expand("$$HOME $5", &env).unwrap(), "$HOME $5");
        assert_eq!(expand("${B} ${C}", &env).unwrap_err(), vec!["B".to_owned(), "C".to_owned()]);
    }
}
