//! Encrypted secrets: values of secret fields sealed with the service's public key (age, X25519
//! recipients), so that a config or definition file (or a store) can hold them; only the holder
//! of the private key reads them. A sealed value is the text `enc:age:<base64 of the age file>`.
//!
//! The private key comes from `privateKeyFile` in the options, else `MES_PRIVATE_KEY_FILE` (a
//! file holding it), else `MES_PRIVATE_KEY`. Errors name the field's path, never a value.

use std::str::FromStr;

use age::secrecy::ExposeSecret;
use base64::Engine;

use crate::config::Secret;
use crate::error::{SyncError, SyncResult};

/// The start of a sealed value.
pub const PREFIX: &str = "enc:age:";
/// Environment variable holding the private key.
pub const KEY_ENV: &str = "MES_PRIVATE_KEY";
/// Environment variable naming a file that holds the private key.
pub const KEY_FILE_ENV: &str = "MES_PRIVATE_KEY_FILE";
/// Option keys whose string values may be sealed: the credentials of the options.
pub const SECRET_FIELDS: [&str; 6] = ["uri", "url", "password", "apiKey", "bearerToken", "token"];
/// Largest sealed value read (a credential is far smaller).
const MAX_SEALED_LEN: usize = 64 * 1024;

/// Why a key or a sealed value cannot be used (never holding the value itself).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("not an age X25519 private key (AGE-SECRET-KEY-1…)")]
    BadPrivateKey,
    #[error("not an age X25519 public key (age1…)")]
    BadPublicKey,
    #[error("the sealed value is not valid base64 after \"{PREFIX}\"")]
    BadEncoding,
    #[error("the sealed value is over {MAX_SEALED_LEN} bytes")]
    TooLarge,
    #[error("cannot decrypt the sealed value: it was altered, or sealed for another key")]
    Undecryptable,
    #[error("the decrypted value is not UTF-8 text")]
    NotText,
    #[error("sealing failed: {0}")]
    Seal(String),
}

/// The service's private key (an age X25519 identity).
pub struct PrivateKey(age::x25519::Identity);

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(***)")
    }
}

impl PrivateKey {
    pub fn generate() -> PrivateKey {
        PrivateKey(age::x25519::Identity::generate())
    }

    /// The key as written in a key file (`AGE-SECRET-KEY-1…`); lines starting with `#` and blank
    /// lines are skipped, as in the key files of `age-keygen`.
    pub fn parse(text: &str) -> Result<PrivateKey, SecretError> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
        let (Some(line), None) = (lines.next(), lines.next()) else { return Err(SecretError::BadPrivateKey) };
        age::x25519::Identity::from_str(line).map(PrivateKey).map_err(|_| SecretError::BadPrivateKey)
    }

    /// The text to store in the key file.
    pub fn to_secret(&self) -> Secret {
        Secret::new(self.0.to_string().expose_secret())
    }

    /// The public key (`age1…`) that seals values for this key.
    pub fn public_key(&self) -> String {
        self.0.to_public().to_string()
    }

    /// The value of a sealed text.
    pub fn open(&self, sealed: &str) -> Result<Secret, SecretError> {
        let body = sealed.strip_prefix(PREFIX).unwrap_or(sealed);
        if body.len() > MAX_SEALED_LEN {
            return Err(SecretError::TooLarge);
        }
        let bytes = base64::engine::general_purpose::STANDARD.decode(body.trim()).map_err(|_| SecretError::BadEncoding)?;
        let plain = age::decrypt(&self.0, &bytes).map_err(|_| SecretError::Undecryptable)?;
        String::from_utf8(plain).map(Secret::new).map_err(|_| SecretError::NotText)
    }
}

/// `value` sealed for `public_key`, as `enc:age:…`.
pub fn seal(public_key: &str, value: &str) -> Result<String, SecretError> {
    let recipient = age::x25519::Recipient::from_str(public_key.trim()).map_err(|_| SecretError::BadPublicKey)?;
    let bytes = age::encrypt(&recipient, value.as_bytes()).map_err(|e| SecretError::Seal(e.to_string()))?;
    Ok(format!("{PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(bytes)))
}

/// Whether a text is a sealed value.
pub fn is_sealed(text: &str) -> bool {
    text.starts_with(PREFIX)
}

/// Where the private key was given: the `privateKeyFile` option, else the environment.
pub fn load_key(option_file: Option<&str>) -> SyncResult<Option<PrivateKey>> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (what, text) = match (option_file, env(KEY_FILE_ENV), env(KEY_ENV)) {
        (Some(file), _, _) => ("privateKeyFile".to_string(), read_key_file("privateKeyFile", file)?),
        (None, Some(_), Some(_)) => return Err(SyncError::config(format!("give only one of {KEY_ENV} and {KEY_FILE_ENV}"))),
        (None, Some(file), None) => (KEY_FILE_ENV.to_string(), read_key_file(KEY_FILE_ENV, &file)?),
        (None, None, Some(text)) => (KEY_ENV.to_string(), text),
        (None, None, None) => return Ok(None),
    };
    PrivateKey::parse(&text).map(Some).map_err(|e| SyncError::config(format!("{what}: {e}")))
}

fn read_key_file(what: &str, path: &str) -> SyncResult<String> {
    crate::config::read_option_text(what, path.as_ref(), crate::config::MAX_SECRET_FILE, "a private key")
}

/// Replaces every sealed value of a secret field (see [`SECRET_FIELDS`]) in an options tree by its
/// decrypted value. A sealed value elsewhere, one that does not decrypt, or one without a key is
/// `ERR_CONFIG` naming the field's path.
pub fn open_tree(value: &mut serde_json::Value, key: Option<&PrivateKey>) -> SyncResult<()> {
    open_at(value, key, "", None)
}

fn open_at(value: &mut serde_json::Value, key: Option<&PrivateKey>, at: &str, field: Option<&str>) -> SyncResult<()> {
    match value {
        serde_json::Value::String(text) if is_sealed(text) => {
            let shown = if at.is_empty() { "options" } else { at };
            if !field.is_some_and(|f| SECRET_FIELDS.contains(&f)) {
                return Err(SyncError::config(format!("{shown}: sealed values ({PREFIX}…) are only read in secret fields ({})", SECRET_FIELDS.join(", "))));
            }
            let Some(key) = key else {
                return Err(SyncError::config(format!(
                    "{shown}: holds a sealed value but no private key is given (privateKeyFile, {KEY_FILE_ENV} or {KEY_ENV})"
                )));
            };
            let opened = key.open(text).map_err(|e| SyncError::config(format!("{shown}: {e}")))?;
            *text = opened.expose().to_string();
            Ok(())
        }
        serde_json::Value::Array(items) => items.iter_mut().enumerate().try_for_each(|(i, item)| open_at(item, key, &format!("{at}[{i}]"), None)),
        serde_json::Value::Object(map) => map.iter_mut().try_for_each(|(k, v)| {
            let path = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
            open_at(v, key, &path, Some(k))
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_sealed_value_opens_with_its_key_only() {
        let key = PrivateKey::generate();
        let sealed = seal(&key.public_key(), "hunter2").unwrap();
        assert!(sealed.starts_with(PREFIX) && !sealed.contains("hunter2"));
        assert_eq!(key.open(&sealed).unwrap().expose(), "hunter2");
        // Sealing twice gives two different texts (a fresh file key each time).
        assert_ne!(seal(&key.public_key(), "hunter2").unwrap(), sealed);
        assert_eq!(PrivateKey::generate().open(&sealed).unwrap_err(), SecretError::Undecryptable);
        let again = PrivateKey::parse(&format!("# created: now\n# public key: {}\n{}\n", key.public_key(), key.to_secret().expose())).unwrap();
        assert_eq!(again.public_key(), key.public_key());
    }

    #[test]
    fn a_tampered_value_is_refused() {
        let key = PrivateKey::generate();
        let sealed = seal(&key.public_key(), "s3cret-value").unwrap();
        let mut bytes = base64::engine::general_purpose::STANDARD.decode(&sealed[PREFIX.len()..]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = format!("{PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(bytes));
        assert_eq!(key.open(&tampered).unwrap_err(), SecretError::Undecryptable);
        assert_eq!(key.open("enc:age:!!!").unwrap_err(), SecretError::BadEncoding);
        assert_eq!(seal("age1nope", "x").unwrap_err(), SecretError::BadPublicKey);
        assert_eq!(PrivateKey::parse("AGE-SECRET-KEY-1NOPE").unwrap_err(), SecretError::BadPrivateKey);
    }

    #[test]
    fn a_tree_opens_in_secret_fields_and_errors_name_the_path_not_the_value() {
        let key = PrivateKey::generate();
        let public = key.public_key();
        let mut tree = json!({ "elasticsearch": { "node": "http://h", "password": seal(&public, "pw-1").unwrap() },
            "outputs": [{ "type": "nats", "token": seal(&public, "tok-2").unwrap() }] });
        open_tree(&mut tree, Some(&key)).unwrap();
        assert_eq!((tree["elasticsearch"]["password"].as_str(), tree["outputs"][0]["token"].as_str()), (Some("pw-1"), Some("tok-2")));

        let other = PrivateKey::generate();
        let mut wrong = json!({ "outputs": [{ "type": "nats", "token": seal(&other.public_key(), "tok-3").unwrap() }] });
        let err = open_tree(&mut wrong, Some(&key)).unwrap_err();
        assert_eq!(err.message, "outputs[0].token: cannot decrypt the sealed value: it was altered, or sealed for another key");
        let mut keyless = json!({ "mongo": { "uri": seal(&public, "mongodb://u:p@h").unwrap() } });
        let err = open_tree(&mut keyless, None).unwrap_err();
        assert!(err.message.starts_with("mongo.uri: holds a sealed value but no private key is given"), "{}", err.message);
        let mut elsewhere = json!({ "collections": [{ "namespace": seal(&public, "a.b").unwrap() }] });
        let err = open_tree(&mut elsewhere, Some(&key)).unwrap_err();
        assert!(err.message.starts_with("collections[0].namespace: sealed values"), "{}", err.message);
    }
}
