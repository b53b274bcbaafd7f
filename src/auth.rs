//! Credentials for a Bulk Data server: none, a bearer token from a file or
//! the environment, or SMART Backend Services (`client_credentials` with a
//! JWT client assertion signed RS384 or ES384).
//!
//! Token and key material live only in [`Secret`]s, whose `Debug` and
//! `Display` print a placeholder, so no log line, error or manifest can carry
//! them by accident.

use crate::audit::{Grant, Identity, Location, Principal};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, RsaKeyPair};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use url::Url;

/// A credential value that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading key file {path}: {source}")]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("reading token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "SMART discovery at {url} failed: {reason}; pass --token-url if the server does not publish .well-known/smart-configuration"
    )]
    Discovery { url: String, reason: String },
    #[error(
        "token request to {url} failed: {reason}; check --client-id, that the server has this client's public key (kid {kid:?}) and the --scope"
    )]
    Token {
        url: String,
        kid: String,
        reason: String,
    },
}

/// A private key that signs client assertions.
pub enum SigningKey {
    Rsa {
        kid: String,
        pair: Arc<RsaKeyPair>,
    },
    Ec {
        kid: String,
        pair: Arc<EcdsaKeyPair>,
    },
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}, kid {:?})", self.alg(), self.kid())
    }
}

fn b64url(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

impl SigningKey {
    pub fn alg(&self) -> &'static str {
        match self {
            Self::Rsa { .. } => "RS384",
            Self::Ec { .. } => "ES384",
        }
    }

    pub fn kid(&self) -> &str {
        match self {
            Self::Rsa { kid, .. } | Self::Ec { kid, .. } => kid,
        }
    }

    /// Reads a JWKS (the first private RSA or P-384 key, or the one with
    /// `kid`), a single JWK, or a PEM (PKCS#8, or PKCS#1 for RSA).
    pub fn from_file(path: &Path, kid: Option<&str>) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::KeyFile {
            path: path.to_path_buf(),
            source,
        })?;
        let fail = |reason: String| AuthError::Key {
            path: path.to_path_buf(),
            reason,
        };
        if text.trim_start().starts_with("-----BEGIN") {
            let kid = kid.ok_or_else(|| {
                fail(
                    "a PEM key has no key id: pass --kid with the kid the server registered".into(),
                )
            })?;
            return Self::from_pem(&text, kid).map_err(fail);
        }
        let value: Value =
            serde_json::from_str(&text).map_err(|e| fail(format!("neither PEM nor JSON ({e})")))?;
        let keys: Vec<&Value> = match value.get("keys").and_then(Value::as_array) {
            Some(keys) => keys.iter().collect(),
            None => vec![&value],
        };
        let chosen = keys
            .into_iter()
            .filter(|k| k.get("d").is_some())
            .find(|k| kid.is_none_or(|want| k.get("kid").and_then(Value::as_str) == Some(want)))
            .ok_or_else(|| {
                fail(match kid {
                    Some(want) => format!("no private key with kid {want:?}"),
                    None => "no private key (a JWK with \"d\") in it".into(),
                })
            })?;
        Self::from_jwk(chosen, kid).map_err(fail)
    }

    fn from_jwk(jwk: &Value, kid: Option<&str>) -> Result<Self, String> {
        let field = |name: &str| -> Result<Vec<u8>, String> {
            jwk.get(name)
                .and_then(Value::as_str)
                .and_then(b64url)
                .ok_or_else(|| format!("JWK member {name:?} is missing or not base64url"))
        };
        let kid = kid
            .map(str::to_owned)
            .or_else(|| jwk.get("kid").and_then(Value::as_str).map(str::to_owned))
            .ok_or("the JWK has no \"kid\" (pass --kid)")?;
        match jwk.get("kty").and_then(Value::as_str) {
            Some("RSA") => {
                let components = ring::rsa::KeyPairComponents {
                    public_key: ring::rsa::PublicKeyComponents {
                        n: field("n")?,
                        e: field("e")?,
                    },
                    d: field("d")?,
                    p: field("p")?,
                    q: field("q")?,
                    dP: field("dp")?,
                    dQ: field("dq")?,
                    qInv: field("qi")?,
                };
                let pair = RsaKeyPair::from_components(&components)
                    .map_err(|e| format!("RSA key rejected: {e}"))?;
                Ok(Self::Rsa {
                    kid,
                    pair: Arc::new(pair),
                })
            }
            Some("EC") => {
                if jwk.get("crv").and_then(Value::as_str) != Some("P-384") {
                    return Err("EC keys must be on curve P-384 (ES384)".into());
                }
                let mut public = vec![4u8];
                public.extend(field("x")?);
                public.extend(field("y")?);
                let pair = EcdsaKeyPair::from_private_key_and_public_key(
                    &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                    &field("d")?,
                    &public,
                    &SystemRandom::new(),
                )
                .map_err(|e| format!("EC key rejected: {e}"))?;
                Ok(Self::Ec {
                    kid,
                    pair: Arc::new(pair),
                })
            }
            other => Err(format!(
                "unsupported key type {other:?}: use RSA (RS384) or EC P-384 (ES384)"
            )),
        }
    }

    fn from_pem(text: &str, kid: &str) -> Result<Self, String> {
        let label = text
            .lines()
            .find_map(|l| l.strip_prefix("-----BEGIN "))
            .and_then(|l| l.strip_suffix("-----"))
            .unwrap_or_default()
            .to_owned();
        let body: String = text
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .concat();
        let der = STANDARD
            .decode(body.trim())
            .map_err(|e| format!("PEM body is not base64: {e}"))?;
        let kid = kid.to_owned();
        match label.as_str() {
            "PRIVATE KEY" => {
                if let Ok(pair) = RsaKeyPair::from_pkcs8(&der) {
                    return Ok(Self::Rsa {
                        kid,
                        pair: Arc::new(pair),
                    });
                }
                EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                    &der,
                    &SystemRandom::new(),
                )
                .map(|pair| Self::Ec {
                    kid,
                    pair: Arc::new(pair),
                })
                .map_err(|e| format!("PKCS#8 key is neither RSA nor EC P-384: {e}"))
            }
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der)
                .map(|pair| Self::Rsa {
                    kid,
                    pair: Arc::new(pair),
                })
                .map_err(|e| format!("PKCS#1 RSA key rejected: {e}")),
            "EC PRIVATE KEY" => Err(
                "SEC1 EC keys are not read directly: convert with `openssl pkcs8 -topk8 -nocrypt -in key.pem -out key.p8.pem`".into(),
            ),
            "ENCRYPTED PRIVATE KEY" => Err("encrypted keys are not supported: decrypt to PKCS#8 (and keep the file private)".into()),
            other => Err(format!("unsupported PEM block {other:?}")),
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let rng = SystemRandom::new();
        match self {
            Self::Rsa { pair, .. } => {
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(&signature::RSA_PKCS1_SHA384, &rng, message, &mut sig)
                    .map_err(|_| "RSA signing failed".to_owned())?;
                Ok(sig)
            }
            Self::Ec { pair, .. } => pair
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "ECDSA signing failed".to_owned()),
        }
    }

    /// A signed client assertion for `token_url` (SMART Backend Services:
    /// iss = sub = client id, aud = token URL, exp at most 5 minutes ahead, fresh jti).
    pub fn client_assertion(
        &self,
        client_id: &str,
        token_url: &str,
        now_unix: i64,
    ) -> Result<Secret, String> {
        let header = json!({"alg": self.alg(), "kid": self.kid(), "typ": "JWT"});
        let claims = json!({
            "iss": client_id,
            "sub": client_id,
            "aud": token_url,
            "exp": now_unix + 300,
            "iat": now_unix,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self.sign(signing_input.as_bytes())?;
        Ok(Secret(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(sig)
        )))
    }
}

/// SMART Backend Services client settings.
#[derive(Debug)]
pub struct SmartClient {
    pub client_id: String,
    pub key: SigningKey,
    /// The token endpoint; `None`: discover it from `.well-known/smart-configuration`.
    pub token_url: Option<Url>,
    pub scope: String,
}

#[derive(Debug)]
pub enum Credentials {
    None,
    Bearer(Secret),
    Smart(SmartClient),
}

impl Credentials {
    /// A bearer token read from a file (trailing whitespace trimmed).
    pub fn bearer_from_file(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::TokenFile {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self::Bearer(Secret(text.trim().to_owned())))
    }
}

struct CachedToken {
    token: Secret,
    refresh_at: Instant,
}

/// Hands out a valid bearer token, fetching a new one before the old expires.
pub struct TokenSource {
    credentials: Credentials,
    server: Url,
    http: reqwest::Client,
    cached: Mutex<Option<CachedToken>>,
    token_url: Mutex<Option<Url>>,
    /// Who the server knows us as, from the last token response (for the
    /// audit trail: client id, `sub`, granted scopes; never the token).
    principal: std::sync::Mutex<Principal>,
    /// Tokens fetched so far (the log and tests show refreshes).
    pub fetched: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    pub fn new(credentials: Credentials, server: Url, http: reqwest::Client) -> Self {
        let token_url = match &credentials {
            Credentials::Smart(c) => c.token_url.clone(),
            _ => None,
        };
        let principal = match &credentials {
            Credentials::Bearer(token) => Principal::from_bearer_token(token.expose()),
            Credentials::Smart(c) => match Identity::new(&c.client_id) {
                Ok(client_id) => Principal::OAuth(Grant::new(client_id)),
                Err(_) => Principal::Unknown,
            },
            Credentials::None => Principal::Unknown,
        };
        Self {
            credentials,
            server,
            http,
            cached: Mutex::new(None),
            token_url: Mutex::new(token_url),
            principal: std::sync::Mutex::new(principal),
            fetched: Default::default(),
        }
    }

    /// Who the requests were made as: the OAuth client and what its last
    /// token response granted, or what a bearer token's claims say.
    pub fn principal(&self) -> Principal {
        self.principal.lock().expect("principal lock").clone()
    }

    pub fn has_credentials(&self) -> bool {
        !matches!(self.credentials, Credentials::None)
    }

    /// The token to send, or `None` when no credentials were configured.
    pub async fn bearer(&self) -> Result<Option<Secret>, AuthError> {
        let smart = match &self.credentials {
            Credentials::None => return Ok(None),
            Credentials::Bearer(token) => return Ok(Some(token.clone())),
            Credentials::Smart(smart) => smart,
        };
        let mut cached = self.cached.lock().await;
        if let Some(token) = cached.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(Some(token.token.clone()));
        }
        let token_url = self.token_url().await?;
        let (token, lifetime) = self.fetch(smart, &token_url).await?;
        self.fetched
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Refresh early: a quarter of the lifetime, at most a minute, before expiry.
        let margin = (lifetime / 4).min(Duration::from_secs(60));
        *cached = Some(CachedToken {
            token: token.clone(),
            refresh_at: Instant::now() + lifetime - margin,
        });
        Ok(Some(token))
    }

    /// Forgets the cached token (the server answered 401 to it).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn token_url(&self) -> Result<Url, AuthError> {
        let mut known = self.token_url.lock().await;
        if let Some(url) = known.as_ref() {
            return Ok(url.clone());
        }

        let url = discovery_url(&self.server);
        let fail = |reason: String| AuthError::Discovery {
            url: url.to_string(),
            reason,
        };
        let response = self
            .http
            .get(url.clone())
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| fail(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(fail(format!("HTTP {}", response.status())));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| fail(e.without_url().to_string()))?;
        let config: Value =
            serde_json::from_slice(&body).map_err(|e| fail(format!("not JSON: {e}")))?;
        let endpoint = config
            .get("token_endpoint")
            .and_then(Value::as_str)
            .ok_or_else(|| fail("no token_endpoint".into()))?;
        let endpoint = Url::parse(endpoint).map_err(|e| fail(format!("token_endpoint: {e}")))?;
        *known = Some(endpoint.clone());
        Ok(endpoint)
    }

    async fn fetch(
        &self,
        smart: &SmartClient,
        token_url: &Url,
    ) -> Result<(Secret, Duration), AuthError> {
        let fail = |reason: String| AuthError::Token {
            url: token_url.to_string(),
            kid: smart.key.kid().to_owned(),
            reason,
        };
        let assertion = smart
            .key
            .client_assertion(
                &smart.client_id,
                token_url.as_str(),
                chrono::Utc::now().timestamp(),
            )
            .map_err(fail)?;
        let form = [
            ("grant_type", "client_credentials"),
            ("scope", smart.scope.as_str()),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion.expose()),
        ];
        let response = self
            .http
            .post(token_url.clone())
            .header("Accept", "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| fail(e.without_url().to_string()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| fail(e.without_url().to_string()))?;
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            // Only the OAuth error fields: a body could echo the assertion.
            let error = value.get("error").and_then(Value::as_str).unwrap_or("");
            let description = value
                .get("error_description")
                .and_then(Value::as_str)
                .unwrap_or("");
            return Err(fail(format!("HTTP {status} {error} {description}")));
        }
        let token = value
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| fail("the response has no access_token".into()))?;
        if let Ok(client_id) = Identity::new(&smart.client_id) {
            let issuer = Location::new(token_url.as_str()).ok();
            let grant = Grant::from_token_response(client_id, issuer, &value);
            *self.principal.lock().expect("principal lock") = Principal::OAuth(grant);
        }
        let lifetime = value
            .get("expires_in")
            .and_then(Value::as_u64)
            .unwrap_or(300);
        Ok((
            Secret(token.to_owned()),
            Duration::from_secs(lifetime.max(1)),
        ))
    }
}

fn discovery_url(server: &Url) -> Url {
    let mut url = server.clone();
    let path = format!(
        "{}/.well-known/smart-configuration",
        url.path().trim_end_matches('/')
    );
    url.set_path(&path);
    url.set_query(None);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/keys")
            .join(name)
    }

    fn verify(jwt: &str, jwks: &Path) -> Value {
        let jwks: Value = serde_json::from_slice(&std::fs::read(jwks).unwrap()).unwrap();
        let key = &jwks["keys"][0];
        let (input, sig) = jwt.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        let get = |n: &str| URL_SAFE_NO_PAD.decode(key[n].as_str().unwrap()).unwrap();
        if key["kty"] == "RSA" {
            signature::RsaPublicKeyComponents {
                n: get("n"),
                e: get("e"),
            }
            .verify(
                &signature::RSA_PKCS1_2048_8192_SHA384,
                input.as_bytes(),
                &sig,
            )
            .expect("RS384 signature verifies");
        } else {
            let mut public = vec![4u8];
            public.extend(get("x"));
            public.extend(get("y"));
            signature::UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, public)
                .verify(input.as_bytes(), &sig)
                .expect("ES384 signature verifies");
        }
        let claims = input.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap()
    }

    #[test]
    fn assertions_from_jwks_and_pem_verify_with_the_public_key() {
        for (key, jwks, alg) in [
            ("rs384.jwks.json", "rs384.jwks.json", "RS384"),
            ("rs384.pem", "rs384.jwks.json", "RS384"),
            ("es384.jwks.json", "es384.jwks.json", "ES384"),
            ("es384.pem", "es384.jwks.json", "ES384"),
        ] {
            let key = SigningKey::from_file(&fixture(key), key.ends_with(".pem").then_some("k1"))
                .unwrap();
            assert_eq!(key.alg(), alg);
            let jwt = key
                .client_assertion("client-1", "https://auth.example/token", 1_000)
                .unwrap();
            let claims = verify(jwt.expose(), &fixture(jwks));
            assert_eq!(claims["iss"], "client-1");
            assert_eq!(claims["sub"], "client-1");
            assert_eq!(claims["aud"], "https://auth.example/token");
            assert_eq!(claims["exp"], 1_300);
            assert!(claims["jti"].as_str().unwrap().len() >= 16);
        }
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("eyJ-very-secret".into());
        assert!(!format!("{secret:?}").contains("secret"));
        let creds = Credentials::Bearer(secret);
        assert!(!format!("{creds:?}").contains("eyJ"));
    }

    #[test]
    fn wrong_kid_and_public_only_keys_are_named() {
        let err = SigningKey::from_file(&fixture("rs384.jwks.json"), Some("nope")).unwrap_err();
        assert!(
            err.to_string().contains("no private key with kid \"nope\""),
            "{err}"
        );
        let err = SigningKey::from_file(&fixture("es384.pem"), None).unwrap_err();
        assert!(err.to_string().contains("--kid"), "{err}");
    }
}
