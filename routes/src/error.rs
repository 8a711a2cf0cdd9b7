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

/// Something legal but probably wrong, e.g. a route that can never be reached or a
/// method name that is likely a typo. Named like a [`ConfigError`], so that the author
/// finds it the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// The route file, as given by the caller.
    pub file: PathBuf,
    /// 1-based line the warning is about.
    pub line: Option<usize>,
    /// The route concerned, if any.
    pub route: Option<String>,
    /// Dotted key the warning is about, e.g. `routes[2].match.methods[0]`.
    pub key: String,
    /// Human message.
    pub message: String,
}

impl ConfigError {
    /// The key with the route name inserted after its index: `routes[2] (payroll).match`.
    pub fn display_key(&self) -> String {
        display_key(&self.key, self.route.as_deref())
    }
}

impl Warning {
    /// The key with the route name inserted after its index, as in [`ConfigError`].
    pub fn display_key(&self) -> String {
        display_key(&self.key, self.route.as_deref())
    }
}

fn display_key(key: &str, route: Option<&str>) -> String {
    match (route, key.find(']')) {
        (Some(route), Some(end)) if key.starts_with("routes[") => {
            format!("{} ({route}){}", &key[..=end], &key[end + 1..])
        }
        _ => key.to_owned(),
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
    /// `routes.yaml:8: warning: routes[0] (a).match.methods[0]: message`: an error's
    /// shape, with the severity where compilers put it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": warning: {}: {}", self.display_key(), self.message)
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

    #[test]
    fn warning_display_is_an_error_shape_with_its_severity() {
        let warning = Warning {
            file: PathBuf::from("routes.yaml"),
            line: Some(8),
            route: Some("a".into()),
            key: "routes[0].match.methods[0]".into(),
            message: "m".into(),
        };
        assert_eq!(
            warning.to_string(),
            "routes.yaml:8: warning: routes[0] (a).match.methods[0]: m"
        );
    }
}
