//! An in-process FHIR Bulk Data server for the export tests, speaking plain
//! HTTP/1.1 on 127.0.0.1 so it can fail the way real servers do: 429 with
//! Retry-After, 5xx and transient OperationOutcomes on status, bodies cut
//! mid-file, expired (410) links, partial manifests, gzip, SMART Backend
//! Services token issuance with real RS384/ES384 signature checks, tokens
//! that expire, fatal export errors, slow downloads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const TRANSACTION_TIME: &str = "2026-11-20T10:00:00.000Z";

#[derive(Clone, Default)]
pub struct Config {
    /// (resourceType, NDJSON body) served as output files.
    pub files: Vec<(String, Vec<u8>)>,
    pub error_file: Option<Vec<u8>>,
    pub deleted_file: Option<Vec<u8>>,
    pub transaction_time: Option<String>,
    pub kickoff_429: u32,
    /// GET kick-off answers 405 (POST only).
    pub get_405: bool,
    pub pending_polls: u32,
    pub retry_after: Option<String>,
    pub status_503: u32,
    pub status_transient_outcome: u32,
    /// The status URL reports a fatal OperationOutcome.
    pub fatal: bool,
    /// The completed status answers 200 with this body instead of a manifest.
    pub bad_manifest: Option<String>,
    /// Output indexes whose first download is cut mid-body.
    pub truncate_once: HashSet<usize>,
    /// Output indexes whose first-generation links answer 410.
    pub expire_first_links: HashSet<usize>,
    /// Files per manifest page (partial manifests with link next).
    pub page_size: Option<usize>,
    pub gzip: bool,
    pub requires_access_token: bool,
    /// Require a bearer token on kick-off/status (and files if requiresAccessToken).
    pub static_token: Option<String>,
    pub smart: Option<Smart>,
    /// Per-chunk delay when sending files (16 KiB chunks).
    pub throttle: Option<Duration>,
    /// Declare a count in the manifest.
    pub declare_counts: bool,
    /// Output indexes whose declared count is one more than the lines sent.
    pub overcount: HashSet<usize>,
}

#[derive(Clone)]
pub struct Smart {
    pub client_id: String,
    /// Public JWKS the client registered.
    pub jwks: Value,
    pub token_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

#[derive(Default)]
pub struct Log {
    pub requests: Vec<Request>,
    pub kickoffs_accepted: u32,
    pub deletes: u32,
    pub tokens: HashMap<String, Instant>,
    /// (alg, kid) of every client assertion that verified.
    pub verified_assertions: Vec<(String, String)>,
    pub rejected_assertions: Vec<String>,
    pub jtis: HashSet<String>,
    /// Requests refused for an expired or unknown token.
    pub unauthorized: u32,
    /// Requests that reached a file with a stale token (must stay 0).
    pub completed_polls: u32,
    downloads: HashMap<usize, u32>,
    polls: u32,
    kickoff_attempts: u32,
}

pub struct BulkServer {
    pub base: String,
    pub log: Arc<Mutex<Log>>,
    pub config: Arc<Mutex<Config>>,
}

impl BulkServer {
    pub async fn start(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/fhir", listener.local_addr().unwrap());
        let server = Self {
            base: base.clone(),
            log: Arc::default(),
            config: Arc::new(Mutex::new(config)),
        };
        let (log, config) = (server.log.clone(), server.config.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (log, config, base) = (log.clone(), config.clone(), base.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, &base, &log, &config).await;
                });
            }
        });
        server
    }

    pub fn requests(&self, path_contains: &str) -> Vec<Request> {
        self.log
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.path.contains(path_contains))
            .cloned()
            .collect()
    }
}

async fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?.to_owned();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[header_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let (path, query) = target
        .split_once('?')
        .map(|(p, q)| (p.to_owned(), q.to_owned()))
        .unwrap_or((target, String::new()));
    Some(Request {
        method,
        path,
        query,
        headers,
        body,
    })
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many body bytes, then close (a cut body).
    cut_at: Option<usize>,
    throttle: Option<Duration>,
}

impl Reply {
    fn new(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body,
            cut_at: None,
            throttle: None,
        }
    }

    fn json(status: u16, value: Value) -> Self {
        Self::new(status, value.to_string().into_bytes()).header("Content-Type", "application/json")
    }

    fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }
}

fn outcome(code: &str, text: &str) -> Value {
    json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]})
}

async fn serve(
    mut stream: TcpStream,
    base: &str,
    log: &Mutex<Log>,
    config: &Mutex<Config>,
) -> std::io::Result<()> {
    let Some(request) = read_request(&mut stream).await else {
        return Ok(());
    };
    log.lock().unwrap().requests.push(request.clone());
    let config = config.lock().unwrap().clone();
    let reply = route(&request, base, log, &config);
    let reason = match reply.status {
        200 => "OK",
        202 => "Accepted",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        410 => "Gone",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", reply.status);
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        reply.body.len()
    ));
    stream.write_all(head.as_bytes()).await?;
    let body = &reply.body[..reply.cut_at.unwrap_or(reply.body.len())];
    match reply.throttle {
        Some(delay) => {
            for part in body.chunks(16 * 1024) {
                stream.write_all(part).await?;
                stream.flush().await?;
                tokio::time::sleep(delay).await;
            }
        }
        None => stream.write_all(body).await?,
    }
    stream.flush().await?;
    stream.shutdown().await
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Checks the bearer token; `None` means the request may proceed.
fn check_token(request: &Request, log: &Mutex<Log>, config: &Config) -> Option<Reply> {
    let given = request
        .headers
        .get("authorization")
        .and_then(|v| v.strip_prefix("Bearer "));
    let ok = if let Some(expected) = &config.static_token {
        given == Some(expected.as_str())
    } else if config.smart.is_some() {
        let log = log.lock().unwrap();
        given.is_some_and(|t| log.tokens.get(t).is_some_and(|exp| Instant::now() < *exp))
    } else {
        return None;
    };
    if ok {
        None
    } else {
        log.lock().unwrap().unauthorized += 1;
        Some(Reply::json(
            401,
            outcome("login", "token missing, unknown or expired"),
        ))
    }
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn b64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).unwrap_or_default()
}

/// Verifies a client assertion against the registered JWKS; returns the reason if bad.
fn verify_assertion(
    jwt: &str,
    smart: &Smart,
    token_url: &str,
    log: &Mutex<Log>,
) -> Result<(), String> {
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return Err("not a JWS".into());
    }
    let header: Value = serde_json::from_slice(&b64(parts[0])).map_err(|e| e.to_string())?;
    let claims: Value = serde_json::from_slice(&b64(parts[1])).map_err(|e| e.to_string())?;
    let kid = header["kid"].as_str().ok_or("no kid")?;
    let alg = header["alg"].as_str().ok_or("no alg")?;
    let key = smart.jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .ok_or("unknown kid")?;
    let message = format!("{}.{}", parts[0], parts[1]);
    let sig = b64(parts[2]);
    let get = |n: &str| b64(key[n].as_str().unwrap_or_default());
    match alg {
        "RS384" => signature::RsaPublicKeyComponents {
            n: get("n"),
            e: get("e"),
        }
        .verify(
            &signature::RSA_PKCS1_2048_8192_SHA384,
            message.as_bytes(),
            &sig,
        )
        .map_err(|_| "RS384 signature does not verify")?,
        "ES384" => {
            let mut public = vec![4u8];
            public.extend(get("x"));
            public.extend(get("y"));
            signature::UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, public)
                .verify(message.as_bytes(), &sig)
                .map_err(|_| "ES384 signature does not verify")?
        }
        other => return Err(format!("alg {other} not accepted")),
    }
    let now = unix_now();
    if claims["iss"] != smart.client_id.as_str() || claims["sub"] != smart.client_id.as_str() {
        return Err("iss/sub is not the client id".into());
    }
    if claims["aud"] != token_url {
        return Err(format!("aud {} is not the token URL", claims["aud"]));
    }
    let exp = claims["exp"].as_i64().ok_or("no exp")?;
    if exp <= now || exp > now + 300 {
        return Err("exp must be in the future and at most 5 minutes ahead".into());
    }
    let jti = claims["jti"].as_str().ok_or("no jti")?.to_owned();
    let mut log = log.lock().unwrap();
    if !log.jtis.insert(jti) {
        return Err("jti replayed".into());
    }
    log.verified_assertions
        .push((alg.to_owned(), kid.to_owned()));
    Ok(())
}

fn manifest_page(base: &str, config: &Config, generation: u32, page: usize) -> Value {
    let file = |kind: &str, index: usize, t: &str, body: &[u8]| {
        let extra = usize::from(kind == "output" && config.overcount.contains(&index));
        let mut entry = json!({"type": t, "url": format!("{base}/files/g{generation}/{kind}/{index}?sig=SECRET-SIGNATURE")});
        if config.declare_counts {
            let lines = body
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .count();
            entry["count"] = json!(lines + extra);
        }
        entry
    };
    let outputs: Vec<Value> = config
        .files
        .iter()
        .enumerate()
        .map(|(i, (t, body))| file("output", i, t, body))
        .collect();
    let (outputs, next) = match config.page_size {
        Some(size) => {
            let start = page * size;
            let end = (start + size).min(outputs.len());
            let next =
                (end < outputs.len()).then(|| format!("{base}/manifest/{generation}/{}", page + 1));
            (outputs[start.min(outputs.len())..end].to_vec(), next)
        }
        None => (outputs, None),
    };
    let mut manifest = json!({
        "transactionTime": config.transaction_time.clone().unwrap_or(TRANSACTION_TIME.into()),
        "request": format!("{base}/$export"),
        "requiresAccessToken": config.requires_access_token,
        "output": outputs,
        "error": [],
    });
    if page == 0 {
        if let Some(body) = &config.error_file {
            manifest["error"] = json!([file("error", 0, "OperationOutcome", body)]);
        }
        if let Some(body) = &config.deleted_file {
            manifest["deleted"] = json!([file("deleted", 0, "Bundle", body)]);
        }
    }
    if let Some(next) = next {
        manifest["link"] = json!([{"relation": "next", "url": next}]);
    }
    manifest
}

fn route(request: &Request, base: &str, log: &Mutex<Log>, config: &Config) -> Reply {
    let path = request.path.strip_prefix("/fhir").unwrap_or(&request.path);
    let token_url = format!("{base}/auth/token");
    if path == "/.well-known/smart-configuration" {
        return Reply::json(
            200,
            json!({"token_endpoint": token_url, "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                   "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
                   "grant_types_supported": ["client_credentials"], "capabilities": ["client-confidential-asymmetric"]}),
        );
    }
    if path == "/auth/token" {
        let Some(smart) = &config.smart else {
            return Reply::new(404, Vec::new());
        };
        let form = form(&request.body);
        if form.get("grant_type").map(String::as_str) != Some("client_credentials")
            || form.get("client_assertion_type").map(String::as_str)
                != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        {
            return Reply::json(400, json!({"error": "invalid_request"}));
        }
        let assertion = form.get("client_assertion").cloned().unwrap_or_default();
        if let Err(reason) = verify_assertion(&assertion, smart, &token_url, log) {
            log.lock().unwrap().rejected_assertions.push(reason.clone());
            return Reply::json(
                401,
                json!({"error": "invalid_client", "error_description": reason}),
            );
        }
        let mut log = log.lock().unwrap();
        let token = format!(
            "tok-{}-{}",
            log.tokens.len() + 1,
            uuid::Uuid::new_v4().simple()
        );
        log.tokens
            .insert(token.clone(), Instant::now() + smart.token_ttl);
        return Reply::json(
            200,
            json!({"access_token": token, "token_type": "bearer", "expires_in": smart.token_ttl.as_secs(), "scope": form.get("scope")}),
        );
    }
    if path.ends_with("/$export") {
        if let Some(reply) = check_token(request, log, config) {
            return reply;
        }
        let mut log = log.lock().unwrap();
        log.kickoff_attempts += 1;
        if log.kickoff_attempts <= config.kickoff_429 {
            return Reply::json(429, outcome("throttled", "too many exports"))
                .header("Retry-After", "1");
        }
        if request.method == "GET" && config.get_405 {
            return Reply::json(405, outcome("not-supported", "use POST"));
        }
        if request.headers.get("prefer").map(String::as_str) != Some("respond-async") {
            return Reply::json(400, outcome("invalid", "Prefer: respond-async is required"));
        }
        log.kickoffs_accepted += 1;
        return Reply::new(202, Vec::new()).header("Content-Location", &format!("{base}/status/1"));
    }
    if path == "/status/1" {
        if let Some(reply) = check_token(request, log, config) {
            return reply;
        }
        let mut log = log.lock().unwrap();
        if request.method == "DELETE" {
            log.deletes += 1;
            return Reply::new(202, Vec::new());
        }
        if config.fatal {
            return Reply::json(
                500,
                outcome(
                    "processing",
                    "export failed: the Group is too large for this server",
                ),
            );
        }
        log.polls += 1;
        let n = log.polls;
        let wait = config.retry_after.clone().unwrap_or("0".into());
        if n <= config.pending_polls {
            return Reply::new(202, Vec::new())
                .header(
                    "X-Progress",
                    &format!("{}% complete", n * 100 / (config.pending_polls + 1)),
                )
                .header("Retry-After", &wait);
        }
        if n <= config.pending_polls + config.status_503 {
            return Reply::new(503, b"overloaded".to_vec()).header("Retry-After", &wait);
        }
        if n <= config.pending_polls + config.status_503 + config.status_transient_outcome {
            return Reply::json(500, outcome("transient", "database busy, try again"));
        }
        if let Some(body) = &config.bad_manifest {
            return Reply::new(200, body.clone().into_bytes())
                .header("Content-Type", "application/json");
        }
        let generation = log.completed_polls;
        log.completed_polls += 1;
        return Reply::json(200, manifest_page(base, config, generation, 0));
    }
    if let Some(rest) = path.strip_prefix("/manifest/") {
        if let Some(reply) = check_token(request, log, config) {
            return reply;
        }
        let (generation, page) = rest.split_once('/').unwrap();
        return Reply::json(
            200,
            manifest_page(
                base,
                config,
                generation.parse().unwrap(),
                page.parse().unwrap(),
            ),
        );
    }
    if let Some(rest) = path.strip_prefix("/files/g") {
        if config.requires_access_token
            && let Some(reply) = check_token(request, log, config)
        {
            return reply;
        }
        let parts: Vec<&str> = rest.split('/').collect();
        let (generation, kind, index): (u32, &str, usize) = (
            parts[0].parse().unwrap(),
            parts[1],
            parts[2].parse().unwrap(),
        );
        let body = match kind {
            "output" => config.files[index].1.clone(),
            "error" => config.error_file.clone().unwrap(),
            _ => config.deleted_file.clone().unwrap(),
        };
        if kind == "output" {
            let mut log = log.lock().unwrap();
            if generation == 0 && config.expire_first_links.contains(&index) {
                return Reply::json(410, outcome("not-found", "link expired"));
            }
            let count = log.downloads.entry(index).or_default();
            *count += 1;
            if *count == 1 && config.truncate_once.contains(&index) {
                let mut reply = Reply::new(200, body);
                reply.cut_at = Some(reply.body.len() / 2);
                return reply.header("Content-Type", "application/fhir+ndjson");
            }
        }
        let gzip = config.gzip
            && request
                .headers
                .get("accept-encoding")
                .is_some_and(|v| v.contains("gzip"));
        let mut reply = if gzip {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(&body).unwrap();
            Reply::new(200, encoder.finish().unwrap()).header("Content-Encoding", "gzip")
        } else {
            Reply::new(200, body)
        };
        reply.throttle = config.throttle;
        return reply.header("Content-Type", "application/fhir+ndjson");
    }
    Reply::json(
        404,
        outcome("not-found", &format!("no route for {}", request.path)),
    )
}
