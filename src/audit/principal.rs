//! Who asked for a job: the OAuth client and what its token was granted, a
//! person at this machine, or nobody known.
//!
//! In: the client id, the token endpoint's response, or a bearer token. Out:
//! a [`Principal`] holding identities and scopes only. The token response
//! and the token are read for `scope` and `sub` (and, in a JWT access token,
//! `client_id`/`azp`) and dropped: nothing here keeps the token, the
//! assertion or a key, so nothing built from a principal can show one.

use base64::Engine as _;
use serde_json::Value;

use super::values::{Identity, Location, Scope};

/// The party on whose request a job ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An OAuth client (SMART Backend Services, or a bearer token whose
    /// claims name one).
    OAuth(Grant),
    /// A person running fhirlake on this machine (the OS user).
    LocalUser(Identity),
    /// Nobody known: no authentication, or an opaque bearer token.
    Unknown,
}

/// An OAuth client and what the authorization server granted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub client_id: Identity,
    /// The access token's `sub`, when the token says (a JWT access token).
    pub subject: Option<Identity>,
    /// The authorization server (token endpoint URL, or the token's `iss`).
    pub issuer: Option<Location>,
    /// The scopes actually granted (the token response's `scope`).
    pub scopes: Vec<Scope>,
    /// How many granted scopes were not SMART scopes and so not recorded.
    pub unrecognised_scopes: usize,
}

impl Grant {
    /// A client with nothing known of its grant yet.
    pub fn new(client_id: Identity) -> Self {
        Self {
            client_id,
            subject: None,
            issuer: None,
            scopes: Vec::new(),
            unrecognised_scopes: 0,
        }
    }

    /// The token's `sub`.
    pub fn with_subject(mut self, subject: Identity) -> Self {
        self.subject = Some(subject);
        self
    }

    /// The authorization server (the identifier system of client and `sub`).
    pub fn with_issuer(mut self, issuer: Location) -> Self {
        self.issuer = Some(issuer);
        self
    }

    /// Records a space-separated `scope` string as granted.
    pub fn with_granted_scope(mut self, scope: &str) -> Self {
        for part in scope.split_ascii_whitespace() {
            match Scope::new(part) {
                Ok(scope) if !self.scopes.contains(&scope) => self.scopes.push(scope),
                Ok(_) => {}
                Err(_) => self.unrecognised_scopes += 1,
            }
        }
        self
    }

    /// From the token endpoint's JSON response: the granted `scope` (RFC 6749
    /// §5.1) and, when the access token is a JWT, its `sub` and `iss`. The
    /// token itself is not kept.
    pub fn from_token_response(
        client_id: Identity,
        token_url: Option<Location>,
        response: &Value,
    ) -> Self {
        let mut grant = Self::new(client_id);
        grant.issuer = token_url;
        if let Some(scope) = response.get("scope").and_then(Value::as_str) {
            grant = grant.with_granted_scope(scope);
        }
        if let Some(claims) = response
            .get("access_token")
            .and_then(Value::as_str)
            .and_then(jwt_claims)
        {
            grant.subject = claim_identity(&claims, "sub");
            if let Some(iss) = claims.get("iss").and_then(Value::as_str) {
                grant.issuer = Location::new(iss).ok().or(grant.issuer);
            }
        }
        grant
    }
}

impl Principal {
    /// The OS user running fhirlake (`$USER`, else `$LOGNAME`), for jobs
    /// no server authenticated: loads of files, HL7 v2 feeds.
    pub fn local_user() -> Self {
        std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .ok()
            .and_then(|name| Identity::new(&name).ok())
            .map_or(Self::Unknown, Self::LocalUser)
    }

    /// A fixed bearer token (`--auth bearer`): when it is a JWT whose claims
    /// name the client (`client_id`, RFC 9068, or `azp`), an OAuth principal
    /// with its `sub`, `iss` and `scope`; otherwise [`Principal::Unknown`].
    /// The token is read, not kept.
    pub fn from_bearer_token(token: &str) -> Self {
        let Some(claims) = jwt_claims(token) else {
            return Self::Unknown;
        };
        let Some(client_id) =
            claim_identity(&claims, "client_id").or_else(|| claim_identity(&claims, "azp"))
        else {
            return Self::Unknown;
        };
        let mut grant = Grant::new(client_id);
        grant.subject = claim_identity(&claims, "sub");
        grant.issuer = claims
            .get("iss")
            .and_then(Value::as_str)
            .and_then(|iss| Location::new(iss).ok());
        match claims.get("scope").or_else(|| claims.get("scp")) {
            Some(Value::String(scope)) => grant = grant.with_granted_scope(scope),
            Some(Value::Array(scopes)) => {
                for scope in scopes.iter().filter_map(Value::as_str) {
                    grant = grant.with_granted_scope(scope);
                }
            }
            _ => {}
        }
        Self::OAuth(grant)
    }
}

/// The claims of a JWS compact token (`header.payload.signature`), unverified:
/// they only say who the server issued the token to.
fn jwt_claims(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(Value::is_object)
}

fn claim_identity(claims: &Value, name: &str) -> Option<Identity> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .and_then(|v| Identity::new(v).ok())
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;

    /// An unsigned JWT with these claims.
    pub(crate) fn jwt(claims: &Value) -> String {
        let b64 = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        format!(
            "{}.{}.c2lnbmF0dXJlLW5vdC1jaGVja2Vk",
            b64(&json!({"alg": "RS384", "typ": "JWT"})),
            b64(claims)
        )
    }

    #[test]
    fn a_token_response_gives_scopes_and_subject_and_nothing_else() {
        let token = jwt(&json!({"sub": "svc-42", "iss": "https://auth.example.org", "exp": 1}));
        let response = json!({
            "access_token": token,
            "token_type": "bearer",
            "expires_in": 300,
            "scope": "system/Patient.rs system/Observation.rs custom:thing system/Patient.rs",
            "refresh_token": "r3fr3sh",
        });
        let grant = Grant::from_token_response(
            Identity::new("fhirlake-prod").unwrap(),
            Some(Location::new("https://ehr.example.org/token").unwrap()),
            &response,
        );
        assert_eq!(grant.client_id.as_str(), "fhirlake-prod");
        assert_eq!(grant.subject.as_ref().map(Identity::as_str), Some("svc-42"));
        assert_eq!(
            grant.issuer.as_ref().map(Location::as_str),
            Some("https://auth.example.org/")
        );
        let scopes: Vec<&str> = grant.scopes.iter().map(Scope::as_str).collect();
        assert_eq!(scopes, ["system/Patient.rs", "system/Observation.rs"]);
        assert_eq!(grant.unrecognised_scopes, 1);
    }

    #[test]
    fn an_opaque_token_response_keeps_the_token_url_as_issuer() {
        let grant = Grant::from_token_response(
            Identity::new("c1").unwrap(),
            Some(Location::new("https://ehr.example.org/token").unwrap()),
            &json!({"access_token": "opaque-abc", "scope": "system/*.read"}),
        );
        assert_eq!(grant.subject, None);
        assert_eq!(
            grant.issuer.unwrap().as_str(),
            "https://ehr.example.org/token"
        );
        assert_eq!(grant.scopes.len(), 1);
    }

    #[test]
    fn a_bearer_jwt_names_its_client_and_an_opaque_one_nobody() {
        let token = jwt(&json!({"client_id": "app-7", "sub": "u1", "scp": ["system/*.rs"]}));
        let Principal::OAuth(grant) = Principal::from_bearer_token(&token) else {
            panic!("a JWT with client_id is an OAuth principal");
        };
        assert_eq!(grant.client_id.as_str(), "app-7");
        assert_eq!(grant.subject.unwrap().as_str(), "u1");
        assert_eq!(grant.scopes[0].as_str(), "system/*.rs");
        let no_client = jwt(&json!({"sub": "u1"}));
        assert_eq!(Principal::from_bearer_token(&no_client), Principal::Unknown);
        assert_eq!(
            Principal::from_bearer_token("opaque-token"),
            Principal::Unknown
        );
        assert_eq!(Principal::from_bearer_token("a.b.c.d"), Principal::Unknown);
    }
}
