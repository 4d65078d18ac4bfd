//! Sealed secrets from JS: a new key pair (`mongo-elastic-sync keygen`) and sealing a value for a
//! public key (`mongo-elastic-sync encrypt`); the work is `crate::secrets`'.

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::error::SyncError;
use crate::secrets::{seal, PrivateKey};

use super::error::js_error;

/// A new private key and its public key.
#[napi(object)]
#[cfg_attr(test, allow(dead_code))] // built for JS
pub struct KeyPair {
    /// `AGE-SECRET-KEY-1…`: keep it in a file only the service reads (`privateKeyFile`).
    pub private_key: String,
    /// `age1…`: what `sealSecret` seals values for.
    pub public_key: String,
}

/// A new age X25519 key pair for sealed secrets.
#[napi]
#[cfg_attr(test, allow(dead_code))] // called from JS
pub fn generate_key_pair() -> KeyPair {
    let key = PrivateKey::generate();
    KeyPair { private_key: key.to_secret().expose().to_string(), public_key: key.public_key() }
}

/// `value` sealed for `publicKey` as `'enc:age:…'`, usable in any secret field of the options.
#[napi]
#[cfg_attr(test, allow(dead_code))] // called from JS
pub fn seal_secret(env: Env, public_key: String, value: String) -> Result<String> {
    seal(&public_key, &value).map_err(|e| js_error(&env, &SyncError::config(format!("publicKey: {e}"))))
}
