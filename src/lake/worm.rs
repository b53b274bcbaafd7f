//! WORM retention for an S3 lake's records: audit events, manifests and the
//! lake's WORM setting are written with S3 Object Lock retention, so nobody
//! (GOVERNANCE: nobody without the bypass permission; COMPLIANCE: nobody,
//! not even the account's root user) can delete or overwrite the stored
//! version before its retention ends.
//!
//! `object_store` cannot send the lock headers on a put, so records go
//! through [`WormStore`], which hands every other call to the lake's store
//! and writes records itself as one SigV4-signed `PUT` carrying the lock
//! headers and `If-None-Match: *`: a record is locked from the moment it
//! exists, with no window between a write and a lock. Signing is the AWS
//! crate's (`aws-sigv4`); credentials and region come from `object_store`'s
//! provider: `AWS_*` env vars, `--storage-option`s, web identity and
//! instance roles, as for the lake's own store (a lake whose keys are only
//! in an AWS profile file is refused by the store's own probe already).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::stream::BoxStream;
use md5::{Digest, Md5};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsCredentialProvider};
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use serde::{Deserialize, Serialize};
use url::Url;

use super::{Lake, LakeError};

/// Six years: the HIPAA documentation retention; clinical policies say 6–10.
pub const DEFAULT_RETENTION_DAYS: u32 = 2190;

/// The lake's WORM setting: once a job has written it, every later job on
/// the lake locks its records too, with or without the flag.
pub const SETTING_PATH: &str = "_fhirlake/worm.json";

/// Objects written locked.
const RECORD_PREFIXES: [&str; 2] = ["_fhirlake/audit/events/", "_fhirlake/manifests/"];

/// S3 Object Lock retention modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "UPPERCASE")]
pub enum LockMode {
    /// Users with `s3:BypassGovernanceRetention` can still shorten or remove it.
    Governance,
    /// Nobody can shorten or remove it, not even the account's root user.
    Compliance,
}

impl LockMode {
    fn header(self) -> &'static str {
        match self {
            Self::Governance => "GOVERNANCE",
            Self::Compliance => "COMPLIANCE",
        }
    }
}

/// How records are locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub mode: LockMode,
    pub days: u32,
}

impl Retention {
    fn until(&self, now: DateTime<Utc>) -> String {
        (now + chrono::Duration::days(i64::from(self.days)))
            .to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    /// The stronger of two settings: a job may lengthen the lake's
    /// retention or make it COMPLIANCE, never weaken it.
    fn stronger(self, other: Self) -> Self {
        Self {
            mode: if self.mode == LockMode::Compliance || other.mode == LockMode::Compliance {
                LockMode::Compliance
            } else {
                LockMode::Governance
            },
            days: self.days.max(other.days),
        }
    }
}

fn is_record(location: &ObjectPath) -> bool {
    let path = location.as_ref();
    path == SETTING_PATH || RECORD_PREFIXES.iter().any(|p| path.starts_with(p))
}

impl Lake {
    /// Turns on WORM for this job's records when `requested` or the lake's
    /// setting says so: checks that the bucket has Object Lock (refusing to
    /// start otherwise), records the setting in the lake on first use, and
    /// returns the lake whose record writes are locked, with the retention
    /// in force. A local lake cannot be locked: asking is an error (its
    /// records are made read-only instead; see the README for what that
    /// does not protect).
    pub async fn with_worm(
        self,
        requested: Option<Retention>,
    ) -> Result<(Lake, Option<Retention>), LakeError> {
        if !matches!(self.root().scheme(), "s3" | "s3a") {
            return match requested {
                Some(_) => Err(LakeError::Worm {
                    uri: self.root().to_string(),
                    detail:
                        "WORM retention needs an S3 lake in a bucket with Object Lock; a local \
                             lake's audit events and manifests are made read-only instead"
                            .into(),
                }),
                None => Ok((self, None)),
            };
        }
        // An unreachable store is named here, with what to check, before the
        // setting is read (which would only retry and fail less clearly);
        // the job's own check of this lake is then free.
        self.ensure_put_if_absent().await?;
        let setting_path = self.path(SETTING_PATH);
        let stored: Option<Retention> = match self.read_object(&setting_path).await? {
            Some(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| LakeError::Worm {
                uri: self.root().to_string(),
                detail: format!(
                    "{SETTING_PATH} is not a WORM setting ({e}); it is written by fhirlake"
                ),
            })?),
            None => None,
        };
        let retention = match (stored, requested) {
            (None, None) => return Ok((self, None)),
            (Some(s), None) => s,
            (None, Some(r)) => r,
            (Some(s), Some(r)) => s.stronger(r),
        };
        let s3 = Arc::new(S3Client::for_lake(self.root(), self.storage_options())?);
        s3.require_object_lock()
            .await
            .map_err(|detail| LakeError::Worm {
                uri: self.root().to_string(),
                detail,
            })?;
        let store: Arc<dyn ObjectStore> = Arc::new(WormStore {
            inner: self.store().clone(),
            s3,
            retention,
        });
        let lake = self.with_store(store);
        // First use, or a job that strengthened it: the lake keeps the
        // stronger setting (a new, locked version on the versioned bucket).
        if stored != Some(retention) {
            let body = serde_json::to_vec_pretty(&retention).expect("a retention serializes");
            let options = PutOptions {
                mode: if stored.is_none() {
                    PutMode::Create
                } else {
                    PutMode::Overwrite
                },
                ..Default::default()
            };
            match lake
                .store()
                .put_opts(&setting_path, body.into(), options)
                .await
            {
                Ok(_)
                | Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => {}
                Err(source) => {
                    return Err(LakeError::Store {
                        path: setting_path.to_string(),
                        source,
                    });
                }
            }
        }
        Ok((lake, Some(retention)))
    }
}

/// The lake's store, with records written locked.
struct WormStore {
    inner: Arc<dyn ObjectStore>,
    s3: Arc<S3Client>,
    retention: Retention,
}

impl fmt::Display for WormStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WormStore({})", self.inner)
    }
}

impl fmt::Debug for WormStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WormStore")
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ObjectStore for WormStore {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if !is_record(location) {
            return self.inner.put_opts(location, payload, opts).await;
        }
        let create = match opts.mode {
            PutMode::Create => true,
            PutMode::Overwrite => false,
            PutMode::Update(_) => {
                return Err(object_store::Error::NotImplemented {
                    operation: "conditional update of a WORM record".into(),
                    implementer: "fhirlake WormStore".into(),
                });
            }
        };
        self.s3
            .put_locked(location, Bytes::from(payload), create, self.retention)
            .await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&ObjectPath>,
        offset: &ObjectPath,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// Signed S3 requests `object_store` has no call for.
struct S3Client {
    http: reqwest::Client,
    /// The bucket's URL, ending in `/`.
    bucket_url: Url,
    /// The lake's key prefix in the bucket (no leading or trailing `/`).
    prefix: String,
    region: String,
    credentials: AwsCredentialProvider,
}

const STORE: &str = "S3 Object Lock";

/// What a key segment keeps unencoded: RFC 3986's unreserved characters.
const KEY_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Tries of one locked PUT (transient 5xx, 429, a concurrent conditional
/// write's 409, a dropped connection), with doubling backoff from 200 ms.
const PUT_TRIES: u32 = 4;

impl S3Client {
    fn for_lake(root: &Url, options: &HashMap<String, String>) -> Result<Self, LakeError> {
        let bad = |detail: String| LakeError::Worm {
            uri: root.to_string(),
            detail,
        };
        let bucket = root
            .host_str()
            .ok_or_else(|| bad("the lake URI names no bucket".into()))?;
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (key, value) in options {
            if let Ok(key) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                builder = builder.with_config(key, value);
            }
        }
        let region = builder
            .get_config_value(&AmazonS3ConfigKey::Region)
            .unwrap_or_else(|| "us-east-1".into());
        let virtual_hosted = builder
            .get_config_value(&AmazonS3ConfigKey::VirtualHostedStyleRequest)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let bucket_url = match builder.get_config_value(&AmazonS3ConfigKey::Endpoint) {
            Some(endpoint) if virtual_hosted => format!("{}/", endpoint.trim_end_matches('/')),
            Some(endpoint) => format!("{}/{bucket}/", endpoint.trim_end_matches('/')),
            // Path style, as object_store defaults to (dotted bucket names keep TLS).
            None => format!("https://s3.{region}.amazonaws.com/{bucket}/"),
        };
        let bucket_url = Url::parse(&bucket_url).map_err(|e| bad(format!("endpoint: {e}")))?;
        let s3 = builder
            .build()
            .map_err(|e| bad(format!("S3 configuration: {e}")))?;
        Ok(Self {
            // No idle connections: a job writes a few dozen records, and a
            // pooled connection would outlive the runtime that opened it.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(60))
                .build()
                .map_err(|e| bad(format!("HTTP client: {e}")))?,
            bucket_url,
            prefix: root.path().trim_matches('/').to_owned(),
            region,
            credentials: s3.credentials().clone(),
        })
    }

    /// The object's URL, each key segment percent-encoded as SigV4's
    /// canonical URI wants (everything but RFC 3986's unreserved
    /// characters), so the path signed is the path S3 canonicalises.
    fn object_url(&self, location: &ObjectPath) -> String {
        let mut url = self.bucket_url.as_str().trim_end_matches('/').to_owned();
        let prefix = self.prefix.split('/').filter(|p| !p.is_empty()).map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        });
        let key = location.parts().map(|p| {
            // object_store's parts are encoded for its own path rules.
            percent_encoding::percent_decode_str(p.as_ref())
                .decode_utf8_lossy()
                .into_owned()
        });
        for segment in prefix.chain(key) {
            url.push('/');
            url.extend(percent_encoding::utf8_percent_encode(&segment, KEY_SEGMENT));
        }
        url
    }

    /// Signs and sends one request; `headers` are signed with it.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<reqwest::Response, String> {
        let credential = self
            .credentials
            .get_credential()
            .await
            .map_err(|e| format!("S3 credentials: {e}"))?;
        let identity = aws_credential_types::Credentials::new(
            &credential.key_id,
            &credential.secret_key,
            credential.token.clone(),
            None,
            "fhirlake",
        )
        .into();
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| format!("signing: {e}"))?
            .into();
        let signable = SignableRequest::new(
            method.as_str(),
            url,
            headers.iter().map(|(k, v)| (*k, v.as_str())),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| format!("signing: {e}"))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| format!("signing: {e}"))?
            .into_parts();
        let mut request = self.http.request(method, url);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        for (name, value) in instructions.headers() {
            request = request.header(name, value);
        }
        request
            .body(body)
            .send()
            .await
            .map_err(|e| format!("{}: {}", redact(url), e.without_url()))
    }

    /// Errors unless the bucket has Object Lock enabled.
    async fn require_object_lock(&self) -> Result<(), String> {
        let url = format!("{}?object-lock", self.bucket_url);
        let response = self
            .send(reqwest::Method::GET, &url, &[], Bytes::new())
            .await?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let bucket = self.bucket_url.as_str();
        if status.is_success() && body.contains("<ObjectLockEnabled>Enabled</ObjectLockEnabled>") {
            return Ok(());
        }
        if status.is_success() || body.contains("ObjectLockConfigurationNotFound") {
            return Err(format!(
                "bucket {bucket} has no Object Lock, so records could be deleted or overwritten; \
                 use a bucket created with Object Lock enabled (e.g. `aws s3api create-bucket \
                 --object-lock-enabled-for-bucket`), or leave out --worm-retention. Nothing was written"
            ));
        }
        Err(format!(
            "cannot read the Object Lock configuration of bucket {bucket}: HTTP {status} {}; \
             check AWS_REGION and that the credentials allow s3:GetBucketObjectLockConfiguration. \
             Nothing was written",
            s3_error(&body)
        ))
    }

    async fn put_locked(
        &self,
        location: &ObjectPath,
        body: Bytes,
        create: bool,
        retention: Retention,
    ) -> object_store::Result<PutResult> {
        let url = self.object_url(location);
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&body));
        let mut headers = vec![
            ("content-md5", md5),
            ("x-amz-object-lock-mode", retention.mode.header().to_owned()),
            (
                "x-amz-object-lock-retain-until-date",
                retention.until(Utc::now()),
            ),
        ];
        if create {
            headers.push(("if-none-match", "*".to_owned()));
        }
        let generic = |detail: String| object_store::Error::Generic {
            store: STORE,
            source: detail.into(),
        };
        let mut attempt = 0;
        let response = loop {
            attempt += 1;
            let transient = match self
                .send(reqwest::Method::PUT, &url, &headers, body.clone())
                .await
            {
                Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                    format!("HTTP {}", r.status())
                }
                Ok(r) if r.status().as_u16() == 409 => {
                    let text = r.text().await.unwrap_or_default();
                    if !text.contains("ConditionalRequestConflict") {
                        return Err(generic(format!(
                            "locked PUT of {location} refused: HTTP 409 {}",
                            s3_error(&text)
                        )));
                    }
                    "HTTP 409 ConditionalRequestConflict".to_owned()
                }
                Ok(r) => break r,
                Err(e) => e,
            };
            if attempt >= PUT_TRIES {
                return Err(generic(format!(
                    "locked PUT of {location} failed {attempt} times, last: {transient}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200 << (attempt - 1))).await;
        };
        let status = response.status();
        let header = |name: &str| crate::http::header_text(response.headers(), name);
        if status.is_success() {
            return Ok(PutResult {
                e_tag: header("etag"),
                version: header("x-amz-version-id"),
            });
        }
        let text = response.text().await.unwrap_or_default();
        match status.as_u16() {
            412 => Err(object_store::Error::AlreadyExists {
                path: location.to_string(),
                source: "an object is already there (If-None-Match)".into(),
            }),
            _ => Err(generic(format!(
                "locked PUT of {location} refused: HTTP {status} {}",
                s3_error(&text)
            ))),
        }
    }
}

/// A URL without query or userinfo, for errors.
fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut shown) => {
            shown.set_query(None);
            let _ = shown.set_username("");
            let _ = shown.set_password(None);
            shown.to_string()
        }
        Err(_) => "the S3 endpoint".to_owned(),
    }
}

/// An S3 error body's `<Code>` and `<Message>` only: the rest of it can
/// carry the access key id (`SignatureDoesNotMatch` does).
fn s3_error(body: &str) -> String {
    let element = |name: &str| {
        let open = format!("<{name}>");
        let start = body.find(&open)? + open.len();
        let end = body[start..].find(&format!("</{name}>"))? + start;
        Some(body[start..end].chars().take(200).collect::<String>())
    };
    match (element("Code"), element("Message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        _ => "(no S3 error code in the answer)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_records_are_locked() {
        let locked = |p: &str| is_record(&ObjectPath::from(p));
        assert!(locked("_fhirlake/audit/events/00000000000000000003.json"));
        assert!(locked("_fhirlake/manifests/job-1.json"));
        assert!(locked(SETTING_PATH));
        assert!(
            !locked("_fhirlake/audit/head.json"),
            "the head hint is rewritten"
        );
        assert!(!locked("patient/_delta_log/00000000000000000001.json"));
        assert!(!locked("_fhirlake/loaded/x.json"));
    }

    #[test]
    fn a_job_can_strengthen_the_lake_setting_never_weaken_it() {
        let g = |days| Retention {
            mode: LockMode::Governance,
            days,
        };
        let c = |days| Retention {
            mode: LockMode::Compliance,
            days,
        };
        assert_eq!(c(2190).stronger(g(30)), c(2190));
        assert_eq!(g(30).stronger(c(10)), c(30));
        assert_eq!(g(2190).stronger(g(3650)), g(3650));
    }

    #[test]
    fn retention_ends_days_after_the_write() {
        let now = DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(g2190().until(now), "2032-12-01T10:00:00Z");
    }

    fn g2190() -> Retention {
        Retention {
            mode: LockMode::Governance,
            days: DEFAULT_RETENTION_DAYS,
        }
    }

    #[test]
    fn object_urls_keep_the_lake_prefix_path_style() {
        let client = S3Client::for_lake(
            &Url::parse("s3://bucket/lakes/a").unwrap(),
            &[
                (
                    "AWS_ENDPOINT_URL".to_owned(),
                    "http://127.0.0.1:9000".to_owned(),
                ),
                ("AWS_ACCESS_KEY_ID".to_owned(), "k".to_owned()),
                ("AWS_SECRET_ACCESS_KEY".to_owned(), "s".to_owned()),
                ("AWS_ALLOW_HTTP".to_owned(), "true".to_owned()),
            ]
            .into_iter()
            .collect(),
        )
        .unwrap();
        assert_eq!(
            client.object_url(&ObjectPath::from("_fhirlake/manifests/j 1+2=3.json")),
            "http://127.0.0.1:9000/bucket/lakes/a/_fhirlake/manifests/j%201%2B2%3D3.json"
        );
    }

    #[test]
    fn errors_keep_the_s3_code_and_message_only() {
        let body = "<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match</Message><AWSAccessKeyId>AKIAEXAMPLE</AWSAccessKeyId></Error>";
        let shown = s3_error(body);
        assert_eq!(
            shown,
            "SignatureDoesNotMatch: The request signature we calculated does not match"
        );
        assert!(!shown.contains("AKIA"));
    }
}
