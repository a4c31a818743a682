//! Secret-bearing settings (passwords, tokens, URLs with credentials,
//! request headers) may name an environment variable instead of holding the
//! secret: `env:VAR`, so a config file or a Kubernetes ConfigMap carries no
//! secret and a Secret mounted as the environment does.

/// What `env:VAR` stands for, or the value itself; `what` names the setting
/// in the error when the variable is not set (the value is never shown).
pub fn resolve(value: &str, what: &str) -> Result<String, String> {
    match value.strip_prefix("env:") {
        Some(var) => std::env::var(var).map_err(|_| format!("{what}: environment variable {var} is not set")),
        None => Ok(value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_or_the_variable_it_names() {
        assert_eq!(resolve("plain", "x").unwrap(), "plain");
        std::env::set_var("CLEAN_HOST_SECRET_TEST", "s3cret");
        assert_eq!(resolve("env:CLEAN_HOST_SECRET_TEST", "x").unwrap(), "s3cret");
        let e = resolve("env:CLEAN_HOST_SECRET_UNSET", "kafka sasl.password").unwrap_err();
        assert_eq!(e, "kafka sasl.password: environment variable CLEAN_HOST_SECRET_UNSET is not set");
    }
}
