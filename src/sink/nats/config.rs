use std::path::PathBuf;

use crate::config::Secret;
use crate::error::{SyncError, SyncResult};

#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// e.g. `nats://127.0.0.1:4222` (several, comma-separated, for a cluster).
    pub url: Secret,
    /// Subject template: `{db}`, `{coll}` and `{index}` are replaced (their dots, spaces and
    /// wildcards become `_`, so each stays one subject token).
    pub subject: String,
    pub stream: String,
    /// Create the stream (over the template's subjects) when it does not exist.
    pub create_stream: bool,
    pub auth: NatsAuth,
}

#[derive(Debug, Clone, Default)]
pub enum NatsAuth {
    #[default]
    None,
    Token(Secret),
    UserPassword {
        username: String,
        password: Secret,
    },
    CredentialsFile(PathBuf),
}

impl NatsConfig {
    pub const DEFAULT_SUBJECT: &'static str = "mongo.{db}.{coll}";
    pub const DEFAULT_STREAM: &'static str = "MONGO_ELASTIC_SYNC";
    pub const DEFAULT_CREATE_STREAM: bool = true;

    pub fn validate(&self, field: &str) -> SyncResult<()> {
        if self.url.expose().trim().is_empty() {
            return Err(SyncError::config(format!("{field}.url: must not be empty")));
        }
        let tokens: Vec<&str> = self.subject.split('.').collect();
        for token in &tokens {
            if token.is_empty() || token.contains(['*', '>', ' ', '\t']) {
                return Err(SyncError::config(format!(
                    "{field}.subject: \"{}\" is not a subject template (dot-separated tokens, no wildcards or spaces)",
                    self.subject
                )));
            }
            let rest = token.replace("{db}", "").replace("{coll}", "").replace("{index}", "");
            if rest.contains(['{', '}']) {
                return Err(SyncError::config(format!("{field}.subject: only {{db}}, {{coll}} and {{index}} can be replaced in \"{}\"", self.subject)));
            }
        }
        if self.stream.is_empty() || self.stream.contains(['.', '*', '>', ' ', '/', '\\']) {
            return Err(SyncError::config(format!("{field}.stream: \"{}\" is not a JetStream stream name", self.stream)));
        }
        if let NatsAuth::CredentialsFile(path) = &self.auth {
            if !path.is_file() {
                return Err(SyncError::config(format!("{field}.credentialsFile: {} is not a readable file", path.display())));
            }
        }
        Ok(())
    }

    /// The subjects a created stream covers: each templated token becomes `*`.
    pub fn stream_subjects(&self) -> String {
        self.subject.split('.').map(|t| if t.contains('{') { "*" } else { t }).collect::<Vec<_>>().join(".")
    }

    /// The subject of a record of `namespace` meant for `index`.
    pub fn subject_for(&self, namespace: &str, index: &str) -> String {
        let (db, coll) = namespace.split_once('.').unwrap_or((namespace, ""));
        self.subject.replace("{db}", &token(db)).replace("{coll}", &token(coll)).replace("{index}", &token(index))
    }
}

/// A value as one subject token.
fn token(value: &str) -> String {
    let t: String = value.chars().map(|c| if matches!(c, '.' | '*' | '>' | ' ') || c.is_control() { '_' } else { c }).collect();
    if t.is_empty() {
        "_".into()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(subject: &str) -> NatsConfig {
        NatsConfig { url: Secret::new("nats://127.0.0.1:4222"), subject: subject.into(), stream: "S".into(), create_stream: true, auth: NatsAuth::None }
    }

    #[test]
    fn subjects_come_from_the_template_one_token_per_value() {
        let c = config(NatsConfig::DEFAULT_SUBJECT);
        assert_eq!(c.subject_for("shop.orders", "orders"), "mongo.shop.orders");
        assert_eq!(c.subject_for("shop.system.views", "x"), "mongo.shop.system_views", "a dotted collection name stays one token");
        assert_eq!(c.stream_subjects(), "mongo.*.*");
        assert_eq!(config("cdc.{index}").subject_for("a.b", "idx-1"), "cdc.idx-1");
    }

    #[test]
    fn bad_templates_and_stream_names_are_refused() {
        for bad in ["mongo..x", "mongo.>", "a.{nope}", "a b"] {
            let err = config(bad).validate("outputs[0]").unwrap_err();
            assert!(err.message.contains("outputs[0].subject"), "{bad}: {}", err.message);
        }
        let err = NatsConfig { stream: "a.b".into(), ..config("x.{db}") }.validate("outputs[1]").unwrap_err();
        assert!(err.message.contains("outputs[1].stream"));
    }
}
