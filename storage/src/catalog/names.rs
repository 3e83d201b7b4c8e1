//! What a database may be called.

/// Names SQL already uses for schemas of its own (`system.parquet_files`,
/// `information_schema.tables`, and `iox.cpu`, InfluxDB 3's name for a table of the
/// database queried), so no database may take them: a database called `iox` would change
/// what `iox.cpu` means for every reader.
pub const RESERVED_DATABASE_NAMES: &[&str] = &["system", "information_schema", "iox"];

/// A database name that breaks the naming rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("database name is empty")]
    Empty,
    #[error("database name '{name}' is {chars} characters long; the limit is 64")]
    TooLong { name: String, chars: usize },
    #[error("database name '{0}' is reserved for Sluice's own tables; choose another name")]
    Reserved(String),
    #[error("database name '{name}' contains '{c}'; use only letters, digits, '_' and '-'")]
    Character { name: String, c: char },
}

/// Checks a database name against the naming rule: 1-64 characters of `[A-Za-z0-9_-]`, not
/// one of [`RESERVED_DATABASE_NAMES`].
pub fn validate_database_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > 64 {
        return Err(NameError::TooLong {
            name: name.into(),
            chars: name.chars().count(),
        });
    }
    if RESERVED_DATABASE_NAMES.contains(&name) {
        return Err(NameError::Reserved(name.into()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(NameError::Character {
            name: name.into(),
            c,
        });
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
        assert_eq!(
            validate_database_name("system"),
            Err(NameError::Reserved("system".into()))
        );
        assert!(validate_database_name(&"x".repeat(65)).is_err());
        assert_eq!(
            validate_database_name("iox"),
            Err(NameError::Reserved("iox".into()))
        );
        assert!(
            validate_database_name("a.b")
                .unwrap_err()
                .to_string()
                .contains("contains '.'")
        );
    }
}
