//! What a database may be called.

/// Names SQL already uses for schemas of its own (`system.parquet_files`,
/// `information_schema.tables`), so no database may take them.
pub const RESERVED_DATABASE_NAMES: &[&str] = &["system", "information_schema"];

/// Checks a database name against the naming rule: 1-64 characters of `[A-Za-z0-9_-]`, not
/// one of [`RESERVED_DATABASE_NAMES`].
pub fn validate_database_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("database name is empty".into());
    }
    if name.len() > 64 {
        return Err(format!(
            "database name '{name}' is {} characters long; the limit is 64",
            name.chars().count()
        ));
    }
    if RESERVED_DATABASE_NAMES.contains(&name) {
        return Err(format!(
            "database name '{name}' is reserved for Sluice's own tables; choose another name"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "database name '{name}' contains '{c}'; use only letters, digits, '_' and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names() {
        assert!(validate_database_name("main").is_ok());
        assert!(validate_database_name("a-b_C9").is_ok());
        assert!(validate_database_name("").is_err());
        assert!(
            validate_database_name("system")
                .unwrap_err()
                .contains("reserved")
        );
        assert!(validate_database_name(&"x".repeat(65)).is_err());
        assert!(
            validate_database_name("a.b")
                .unwrap_err()
                .contains("contains '.'")
        );
    }
}
