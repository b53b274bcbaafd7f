//! Resolving a lake URI (`./lake`, `file:///data/lake`, `s3://bucket/prefix`).

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::DeltaTableBuilder;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use url::Url;

use super::LakeError;

/// A resolved lake root plus the storage options every table shares.
#[derive(Clone)]
pub struct Lake {
    root: Url,
    storage_options: HashMap<String, String>,
    /// Rooted at the lake root: paths are relative to it.
    store: Arc<dyn ObjectStore>,
    /// The put-if-absent probe passed: later checks of this lake (and its
    /// clones) are free.
    probed: Arc<std::sync::atomic::AtomicBool>,
    /// Where `_segregated/<table>` tables live when not in this lake
    /// (`--segregated-lake`; see `segregated.rs`).
    pub(super) segregated: Option<Arc<Lake>>,
}

impl std::fmt::Debug for Lake {
    // Storage options may hold secrets: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake")
            .field("root", &self.root.as_str())
            .finish()
    }
}

impl Lake {
    /// Resolves `uri`; a plain path is made absolute and created if missing.
    pub fn open(uri: &str, storage_options: HashMap<String, String>) -> Result<Self, LakeError> {
        let bad = |reason: String| LakeError::Location {
            uri: uri.to_owned(),
            reason,
        };
        let mut root = match Url::parse(uri) {
            Ok(url) if url.scheme().len() > 1 => url,
            _ => {
                std::fs::create_dir_all(uri)
                    .map_err(|e| bad(format!("cannot create directory: {e}")))?;
                let abs = std::fs::canonicalize(uri).map_err(|e| bad(e.to_string()))?;
                Url::from_directory_path(&abs).map_err(|()| bad("not an absolute path".into()))?
            }
        };
        if root.scheme() == "file" {
            let path = root
                .to_file_path()
                .map_err(|()| bad("not a local path".into()))?;
            std::fs::create_dir_all(&path)
                .map_err(|e| bad(format!("cannot create directory: {e}")))?;
        }
        if !root.path().ends_with('/') {
            root.set_path(&format!("{}/", root.path()));
        }
        // The ledger's store comes from deltalake's own factory, so ledger files
        // and tables see the same configuration (env AWS_* plus --storage-option).
        let store = object_store_for(&root, &storage_options)?;
        Ok(Self {
            root,
            storage_options,
            store,
            probed: Arc::default(),
            segregated: None,
        })
    }

    pub fn root(&self) -> &Url {
        &self.root
    }

    pub fn storage_options(&self) -> &HashMap<String, String> {
        &self.storage_options
    }

    /// URL of the Delta table called `name` (a directory under the root, or
    /// under the segregated lake's for a segregated table).
    pub fn table_url(&self, name: &str) -> Url {
        self.holding(name)
            .root
            .join(&format!("{name}/"))
            .expect("table names are validated identifiers")
    }

    /// URL of table `name`, with its directory created on a local lake
    /// (object stores have no directories; local Delta needs one to exist).
    pub fn prepare_table(&self, name: &str) -> Result<Url, LakeError> {
        let url = self.table_url(name);
        if url.scheme() == "file"
            && let Ok(path) = url.to_file_path()
        {
            std::fs::create_dir_all(&path).map_err(|e| LakeError::Location {
                uri: url.to_string(),
                reason: format!("cannot create table directory: {e}"),
            })?;
        }
        Ok(url)
    }

    /// Whether table `name` has a Delta log (was created, by any job).
    pub async fn has_table(&self, name: &str) -> Result<bool, LakeError> {
        let lake = self.holding(name);
        let log = lake.path(&format!("{name}/_delta_log/"));
        match lake.store().list(Some(&log)).next().await {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(source)) => Err(LakeError::Store {
                path: log.to_string(),
                source,
            }),
        }
    }

    /// Checks that the store is reachable and honours put-if-absent, which
    /// Delta commits and the ledger rely on: a second create of the same
    /// object must fail. A store that cannot be reached (network, DNS, TLS,
    /// credentials) is told apart from one that accepted a second create.
    pub async fn ensure_put_if_absent(&self) -> Result<(), LakeError> {
        use std::sync::atomic::Ordering;
        if self.probed.load(Ordering::Acquire) {
            return Ok(());
        }
        self.probe_put_if_absent().await?;
        self.probed.store(true, Ordering::Release);
        Ok(())
    }

    async fn probe_put_if_absent(&self) -> Result<(), LakeError> {
        // Few retries: an unreachable endpoint should say so in seconds, not minutes.
        let mut options = self.storage_options.clone();
        options
            .entry("max_retries".into())
            .or_insert_with(|| "2".into());
        options
            .entry("retry_timeout".into())
            .or_insert_with(|| "10s".into());
        let store = object_store_for(&self.root, &options)?;
        let path = self.path(&format!(
            "_fhirlake/probe/{}",
            uuid::Uuid::new_v4().simple()
        ));
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let refuse = |detail: String| LakeError::NoPutIfAbsent {
            uri: self.root.to_string(),
            detail,
        };
        let first = store
            .put_opts(&path, PutPayload::from_static(b"1"), create.clone())
            .await;
        match first {
            Ok(_) => {}
            Err(e @ object_store::Error::NotImplemented { .. }) => {
                return Err(refuse(e.to_string()));
            }
            Err(e) => return Err(self.unreachable(&e)),
        }
        let second = store
            .put_opts(&path, PutPayload::from_static(b"2"), create)
            .await;
        let _ = store.delete(&path).await;
        match second {
            Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e @ object_store::Error::NotImplemented { .. }) => Err(refuse(e.to_string())),
            Err(e) => Err(self.unreachable(&e)),
            Ok(_) => Err(refuse(
                "a second create of the same object succeeded".into(),
            )),
        }
    }

    /// Why the store at the lake root could not be written, and what to check.
    fn unreachable(&self, error: &object_store::Error) -> LakeError {
        let mut detail = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !detail.contains(&text) {
                detail.push_str(": ");
                detail.push_str(&text);
            }
            source = cause.source();
        }
        let endpoint = [
            "AWS_ENDPOINT_URL",
            "aws_endpoint_url",
            "aws_endpoint",
            "endpoint",
        ]
        .iter()
        .find_map(|k| self.storage_options.get(*k).cloned())
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .unwrap_or_else(|| "the store's default endpoint".into());
        LakeError::Unreachable {
            uri: self.root.to_string(),
            endpoint,
            hint: unreachable_hint(self.root.scheme(), &detail),
            detail,
        }
    }

    /// The object store holding the lake, for ledger files.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The same lake, its ledger files written through `store` (WORM).
    pub(super) fn with_store(self, store: Arc<dyn ObjectStore>) -> Self {
        Self { store, ..self }
    }

    /// Makes a record of a local lake read-only (an audit event, a
    /// manifest: objects fhirlake never rewrites), so an editor or a script
    /// cannot change one by accident. It does not stop the files' owner or
    /// root, who can change the mode back: `fhirlake verify` is the check.
    /// A no-op on object stores (S3 Object Lock is their WORM).
    pub fn seal(&self, relative: &str) {
        if self.root.scheme() != "file" {
            return;
        }
        let Ok(dir) = self.root.to_file_path() else {
            return;
        };
        let path = dir.join(relative);
        if let Ok(meta) = std::fs::metadata(&path) {
            let mut permissions = meta.permissions();
            permissions.set_readonly(true);
            // Best effort: a record that stays writable is still verified.
            let _ = std::fs::set_permissions(&path, permissions);
        }
    }

    /// Every object under `dir` (recursively).
    pub async fn list_objects(&self, dir: &ObjectPath) -> Result<Vec<ObjectPath>, LakeError> {
        use futures::TryStreamExt;
        self.store
            .list(Some(dir))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|source| LakeError::Store {
                path: dir.to_string(),
                source,
            })
    }

    /// An object's bytes, or `None` when it is absent.
    pub async fn read_object(&self, path: &ObjectPath) -> Result<Option<bytes::Bytes>, LakeError> {
        let store_err = |source| LakeError::Store {
            path: path.to_string(),
            source,
        };
        match self.store.get(path).await {
            Ok(result) => result.bytes().await.map(Some).map_err(store_err),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_err(e)),
        }
    }

    /// Object path of `relative` (e.g. `_fhirlake/manifests/x.json`) in the store.
    pub fn path(&self, relative: &str) -> ObjectPath {
        ObjectPath::from_iter(relative.split('/').filter(|s| !s.is_empty()))
    }
}

/// What to check, given how a write to the store failed.
fn unreachable_hint(scheme: &str, detail: &str) -> &'static str {
    let has = |words: &[&str]| {
        let lower = detail.to_ascii_lowercase();
        words.iter().any(|w| lower.contains(w))
    };
    if scheme == "file" {
        "check that the lake directory exists and this user may write to it"
    } else if has(&[
        "invalidaccesskeyid",
        "signaturedoesnotmatch",
        "accessdenied",
        // Not a bare "403": the detail holds object paths with random hex
        // (`_fhirlake/probe/…5b403ec`); a 403 answer says "Forbidden".
        "forbidden",
        "unauthenticated",
        "permission denied",
        "credential",
    ]) {
        "check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN or AWS_PROFILE) and that they may write to this bucket and prefix"
    } else if has(&["nosuchbucket", "bucket does not exist"]) {
        "check the bucket's name in the lake URI, or create the bucket"
    } else if has(&["certificate", "tls", "ssl", "handshake"]) {
        "check the endpoint's scheme and certificate (a plain http:// endpoint also needs AWS_ALLOW_HTTP=true)"
    } else if has(&[
        "connect",
        "connection",
        "dns",
        "resolve",
        "timed out",
        "timeout",
        "unreachable",
        "no route",
    ]) {
        "check AWS_ENDPOINT_URL (or --storage-option AWS_ENDPOINT_URL=...), that the server is running, and that this machine can reach it"
    } else {
        "check the endpoint, the credentials and the bucket"
    }
}

/// An object store rooted at `url`, configured as deltalake configures table
/// stores: the process's `AWS_*` environment plus `options`.
pub fn object_store_for(
    url: &Url,
    options: &HashMap<String, String>,
) -> Result<Arc<dyn ObjectStore>, LakeError> {
    register_storage_handlers();
    DeltaTableBuilder::from_url(url.clone())
        .and_then(|b| b.with_storage_options(options.clone()).build_storage())
        .map(|log_store| log_store.object_store(None))
        .map_err(|e| LakeError::Location {
            uri: url.to_string(),
            reason: format!("{e}; check the scheme and --storage-option values"),
        })
}

/// Makes `s3://` (and `s3a://`) URLs known to deltalake; idempotent.
pub fn register_storage_handlers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| deltalake::aws::register_handlers(None));
}

#[cfg(test)]
mod tests {
    use super::unreachable_hint;

    #[test]
    fn a_refused_connection_is_an_endpoint_problem_whatever_the_path_holds() {
        let refused = "Error performing PUT http://127.0.0.1:41221/lake/fhir/_fhirlake/probe/b273d8d8986b49128b2d1f54e5b403ec in 286ms, after 2 retries - HTTP error: error sending request: client error (Connect): tcp connect error: Connection refused (os error 111)";
        assert!(unreachable_hint("s3", refused).starts_with("check AWS_ENDPOINT_URL"));
        let denied = "Error performing PUT http://x/lake/p: Client error with status 403 Forbidden: AccessDenied";
        assert!(unreachable_hint("s3", denied).starts_with("check the credentials"));
    }
}
