//! Keeps secrets out of everything the monitor shows. The engine already keeps them out of its
//! messages; this is the second line: every text the monitor keeps (warnings, retry causes,
//! dead-letter reasons, errors) has the configured secrets and the passwords of any URL in it
//! replaced by `***`.

use std::sync::LazyLock;

use regex::Regex;

use crate::config::{EsAuth, OutputConfig, SyncConfig};
use crate::sink::nats::NatsAuth;

/// Shorter values are not searched for: replacing them would garble ordinary text.
const MIN_SECRET_LEN: usize = 4;

/// `scheme://user:password@` → `scheme://user:***@`.
static USER_PASSWORD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s/@:]*):[^\s/@]*@").expect("valid pattern"));
/// `scheme://token@` (NATS tokens, bare user names) → `scheme://***@`.
static USER_ONLY: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/@:]+@").expect("valid pattern"));

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so that a secret containing another is replaced whole.
    secrets: Vec<String>,
}

impl Redactor {
    /// Knows every secret of `config`: passwords in URIs, Elasticsearch credentials, NATS
    /// tokens and passwords, the HTTP token.
    pub fn for_config(config: &SyncConfig) -> Self {
        let mut secrets = Vec::new();
        add_url_secrets(&mut secrets, config.mongo.uri.expose());
        if let Some(pg) = &config.postgres {
            add_url_secrets(&mut secrets, pg.uri.expose());
        }
        if let Some(es) = &config.elasticsearch {
            add_url_secrets(&mut secrets, &es.node);
            match &es.auth {
                EsAuth::None => {}
                EsAuth::Basic { username, password } => {
                    secrets.push(password.expose().to_string());
                    use base64::Engine;
                    secrets.push(base64::engine::general_purpose::STANDARD.encode(format!("{username}:{}", password.expose())));
                }
                EsAuth::ApiKey(key) => secrets.push(key.expose().to_string()),
                EsAuth::Bearer(token) => secrets.push(token.expose().to_string()),
            }
        }
        for output in &config.outputs {
            if let OutputConfig::Nats(nats) = output {
                for url in nats.url.expose().split(',') {
                    add_url_secrets(&mut secrets, url.trim());
                }
                match &nats.auth {
                    NatsAuth::Token(token) => secrets.push(token.expose().to_string()),
                    NatsAuth::UserPassword { password, .. } => secrets.push(password.expose().to_string()),
                    NatsAuth::None | NatsAuth::CredentialsFile(_) => {}
                }
            }
        }
        if let Some(token) = config.http.as_ref().and_then(|h| h.token.as_ref()) {
            secrets.push(token.expose().to_string());
        }
        Redactor::new(secrets)
    }

    pub fn new(secrets: Vec<String>) -> Self {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.chars().count() >= MIN_SECRET_LEN).collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Redactor { secrets }
    }

    /// `text` without secrets, cut to [`super::recent::MAX_TEXT`] characters.
    pub fn clean(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        let out = USER_PASSWORD.replace_all(&out, "$1:***@");
        let out = USER_ONLY.replace_all(&out, "$1***@");
        super::recent::cut(&out)
    }
}

/// The password (or token) in a URL's user info, as written and percent-decoded.
fn add_url_secrets(secrets: &mut Vec<String>, url: &str) {
    let Some(rest) = url.split_once("://").map(|(_, rest)| rest) else { return };
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let Some((userinfo, _)) = authority.rsplit_once('@') else { return };
    let secret = userinfo.split_once(':').map_or(userinfo, |(_, password)| password);
    for form in [secret.to_string(), percent_encoding::percent_decode_str(secret).decode_utf8_lossy().into_owned()] {
        secrets.push(form);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_secrets_and_url_passwords_are_replaced() {
        let r = Redactor::new(vec!["s3cr3t-key".into(), "abc".into()]);
        assert_eq!(r.clean("auth with s3cr3t-key failed"), "auth with *** failed");
        assert_eq!(r.clean("abc stays: too short to search for"), "abc stays: too short to search for");
        assert_eq!(r.clean("GET http://bob:hunter2@es:9200/_bulk refused"), "GET http://bob:***@es:9200/_bulk refused");
        assert_eq!(r.clean("nats://t0ken@127.0.0.1:4222 down"), "nats://***@127.0.0.1:4222 down");
        assert_eq!(r.clean("mongodb://h1:27017,h2:27017/?replicaSet=rs0"), "mongodb://h1:27017,h2:27017/?replicaSet=rs0");
    }

    #[test]
    fn url_passwords_are_known_encoded_and_decoded() {
        let mut secrets = Vec::new();
        add_url_secrets(&mut secrets, "mongodb://app:p%40ss%3Aword@h1,h2/db?replicaSet=rs0");
        assert_eq!(secrets, vec!["p%40ss%3Aword".to_string(), "p@ss:word".to_string()]);
        let r = Redactor::new(secrets);
        assert_eq!(r.clean("auth failed for p@ss:word"), "auth failed for ***");
    }
}
