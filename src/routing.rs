//! Picks the backend for a new container: the `org.nexcage.backend` annotation
//! (only for backends the config allows), else the first matching rule, else the default.
//! An unknown or disallowed backend is an error, never a silent fallback.

use std::collections::HashMap;
use std::fmt;

use crate::config::Config;
use crate::error::{Error, Result};

pub const BACKEND_ANNOTATION: &str = "org.nexcage.backend";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Annotation,
    Rule(usize),
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub backend: String,
    pub reason: Reason,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Annotation => write!(f, "annotation {BACKEND_ANNOTATION}"),
            Reason::Rule(i) => write!(f, "rule {}", i + 1),
            Reason::Default => f.write_str("default"),
        }
    }
}

pub fn route(config: &Config, id: &str, annotations: &HashMap<String, String>) -> Result<Route> {
    if let Some(name) = annotations.get(BACKEND_ANNOTATION) {
        if !config.backends.contains_key(name) {
            return Err(Error::UnknownBackend {
                name: name.clone(),
                known: config.backend_names(),
            });
        }
        if !config.annotation_backends.iter().any(|a| a == name) {
            return Err(Error::BackendNotAllowed {
                name: name.clone(),
                annotation: BACKEND_ANNOTATION,
                allowed: if config.annotation_backends.is_empty() {
                    "none".into()
                } else {
                    config.annotation_backends.join(", ")
                },
            });
        }
        return Ok(Route {
            backend: name.clone(),
            reason: Reason::Annotation,
        });
    }
    let matched = config.rules.iter().position(|rule| {
        rule.id.as_deref().is_none_or(|p| glob_match(p, id))
            && rule
                .annotations
                .iter()
                .all(|(key, pattern)| annotations.get(key).is_some_and(|v| glob_match(pattern, v)))
    });
    Ok(match matched {
        Some(i) => Route {
            backend: config.rules[i].backend.clone(),
            reason: Reason::Rule(i),
        },
        None => Route {
            backend: config.default.clone(),
            reason: Reason::Default,
        },
    })
}

/// Patterns were checked when the config was loaded.
fn glob_match(pattern: &str, text: &str) -> bool {
    glob::Pattern::new(pattern).is_ok_and(|p| p.matches(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        serde_json::from_str(
            r#"{"default":"crun",
                "backends":{"crun":{"type":"oci","path":"/c"},"runc":{"type":"oci","path":"/r"},
                            "pinned":{"type":"oci","path":"/p"}},
                "annotation_backends":["runc"],
                "rules":[{"backend":"runc","id":"test-*"},
                         {"backend":"pinned","annotations":{"tier":"gold*","zone":"*"}}]}"#,
        )
        .unwrap()
    }

    fn ann(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn precedence() {
        let c = config();
        let r = route(&c, "test-1", &ann(&[])).unwrap();
        assert_eq!((r.backend.as_str(), r.reason), ("runc", Reason::Rule(0)));
        let r = route(&c, "x", &ann(&[("tier", "golden"), ("zone", "a")])).unwrap();
        assert_eq!((r.backend.as_str(), r.reason), ("pinned", Reason::Rule(1)));
        let r = route(&c, "x", &ann(&[("tier", "golden")])).unwrap();
        assert_eq!((r.backend.as_str(), r.reason), ("crun", Reason::Default));
        let r = route(&c, "x", &ann(&[(BACKEND_ANNOTATION, "runc")])).unwrap();
        assert_eq!((r.backend.as_str(), r.reason), ("runc", Reason::Annotation));
    }

    #[test]
    fn annotation_errors() {
        let c = config();
        let e = route(&c, "x", &ann(&[(BACKEND_ANNOTATION, "pinned")])).unwrap_err();
        assert!(e.to_string().contains("may not be selected"), "{e}");
        let e = route(&c, "x", &ann(&[(BACKEND_ANNOTATION, "nope")])).unwrap_err();
        assert!(e.to_string().contains("unknown backend"), "{e}");
    }
}
