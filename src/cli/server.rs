//! How fhirlake talks to a FHIR server, for every command that does
//! (`export`, `sync`): authentication, retries, timeouts. Secrets come from
//! files or the environment, never from the command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use url::Url;

use crate::auth::{Credentials, Secret, SigningKey, SmartClient, TokenSource};
use crate::http::{HttpClient, RetryPolicy};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthKind {
    /// No Authorization header.
    None,
    /// A fixed bearer token from --token-file or FHIRLAKE_TOKEN.
    Bearer,
    /// SMART Backend Services: client_credentials with a signed JWT assertion.
    SmartBackend,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// How to authenticate. Default: smart-backend with --client-id, bearer with a token, else none.
    #[arg(long, value_enum)]
    pub auth: Option<AuthKind>,
    /// File holding a bearer token (or set FHIRLAKE_TOKEN).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// SMART client id registered with the server.
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// Private key: JWKS / JWK (RSA for RS384, EC P-384 for ES384) or PKCS#8/PKCS#1 PEM.
    #[arg(long, value_name = "PATH", env = "FHIRLAKE_KEY_FILE")]
    pub key: Option<PathBuf>,
    /// Key id (required for PEM keys; picks a key out of a JWKS).
    #[arg(long)]
    pub kid: Option<String>,
    /// Token endpoint (default: discovered from <server>/.well-known/smart-configuration).
    #[arg(long)]
    pub token_url: Option<Url>,
    /// Scopes to request: SMART v1 `system/*.read` or v2 `system/*.rs`.
    #[arg(long, default_value = "system/*.read")]
    pub scope: String,
    /// Tries per request on 429/5xx/network errors and per file on cut bodies.
    #[arg(long, default_value_t = 8)]
    pub retries: u32,
    /// First backoff step in milliseconds (doubles per retry, full jitter, capped at 60 s).
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub backoff_ms: u64,
    /// Longest Retry-After honoured, in seconds (longer ones are cut to this).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub max_retry_after: u64,
    /// Longest a request may take, in seconds (connect and every read).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub timeout: u64,
}

impl ServerArgs {
    /// The HTTP client for `server`: pooled connections, these credentials
    /// and retries, a circuit breaker per host.
    pub fn http(&self, server: &Url) -> Result<HttpClient> {
        let retry = RetryPolicy {
            attempts: self.retries.max(1),
            base: Duration::from_millis(self.backoff_ms),
            cap: Duration::from_secs(60),
            max_wait: Duration::from_secs(self.max_retry_after),
        };
        let client = reqwest::Client::builder()
            .user_agent(concat!("fhirlake/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30.min(self.timeout)))
            .read_timeout(Duration::from_secs(self.timeout))
            .build()
            .context("building the HTTP client")?;
        let tokens = TokenSource::new(self.credentials()?, server.clone(), client.clone());
        Ok(HttpClient::new(client, tokens, retry))
    }

    fn credentials(&self) -> Result<Credentials> {
        let args = self;
        let kind = args.auth.unwrap_or(if args.client_id.is_some() {
            AuthKind::SmartBackend
        } else if args.token_file.is_some() || std::env::var_os("FHIRLAKE_TOKEN").is_some() {
            AuthKind::Bearer
        } else {
            AuthKind::None
        });
        Ok(match kind {
            AuthKind::None => Credentials::None,
            AuthKind::Bearer => match &args.token_file {
                Some(path) => Credentials::bearer_from_file(path)?,
                None => match std::env::var("FHIRLAKE_TOKEN") {
                    Ok(token) if !token.trim().is_empty() => {
                        Credentials::Bearer(Secret::new(token.trim().to_owned()))
                    }
                    _ => bail!("--auth bearer needs --token-file or FHIRLAKE_TOKEN"),
                },
            },
            AuthKind::SmartBackend => {
                let client_id = args
                    .client_id
                    .clone()
                    .context("--auth smart-backend needs --client-id")?;
                let key = args
                    .key
                    .as_deref()
                    .context("--auth smart-backend needs --key (a JWKS or PEM private key file)")?;
                Credentials::Smart(SmartClient {
                    client_id,
                    key: SigningKey::from_file(key, args.kid.as_deref())?,
                    token_url: args.token_url.clone(),
                    scope: args.scope.clone(),
                })
            }
        })
    }
}
