//! Validation errors and warnings: each names the file, the line and the dotted key.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// One problem in a route file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigError {
    /// The route file, as given by the caller.
    pub file: PathBuf,
    /// 1-based line of the offending key, when it could be located.
    pub line: Option<usize>,
    /// Name of the route the problem belongs to, if any.
    pub route: Option<String>,
    /// Dotted key, e.g. `routes[2].match.path_regex` or `upstreams.invoices.timeout`.
    pub key: String,
    /// Lowercase human message, e.g. `invalid regex: ...`.
    pub message: String,
}

/// Every problem found in one pass over a route file (never empty when returned as `Err`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidationErrors {
    /// The problems, in file order.
    pub errors: Vec<ConfigError>,
}

/// Something legal but probably wrong, e.g. a route that can never be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// 1-based line the warning is about.
    pub line: Option<usize>,
    /// The route concerned, if any.
    pub route: Option<String>,
    /// Human message.
    pub message: String,
}

impl ConfigError {
    /// The key with the route name inserted after its index: `routes[2] (payroll).match`.
    pub fn display_key(&self) -> String {
        match (&self.route, self.key.find(']')) {
            (Some(route), Some(end)) if self.key.starts_with("routes[") => {
                format!("{} ({route}){}", &self.key[..=end], &self.key[end + 1..])
            }
            _ => self.key.clone(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}: {}", self.display_key(), self.message)
    }
}

impl std::error::Error for ConfigError {}

impl ValidationErrors {
    /// A single error that is about the file as a whole (unreadable, not YAML, ...).
    pub(crate) fn single(error: ConfigError) -> Self {
        Self {
            errors: vec![error],
        }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "warning")?;
        if let Some(line) = self.line {
            write!(f, ": line {line}")?;
        }
        if let Some(route) = &self.route {
            write!(f, ": route `{route}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_inserts_route_name() {
        let error = ConfigError {
            file: PathBuf::from("routes.yaml"),
            line: Some(12),
            route: Some("payroll".into()),
            key: "routes[2].match.path_regex".into(),
            message: "invalid regex: x".into(),
        };
        assert_eq!(
            error.to_string(),
            "routes.yaml:12: routes[2] (payroll).match.path_regex: invalid regex: x"
        );
        let error = ConfigError {
            line: None,
            route: None,
            key: "default".into(),
            ..error
        };
        assert_eq!(error.to_string(), "routes.yaml: default: invalid regex: x");
    }
}
