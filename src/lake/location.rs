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
        })
    }

    pub fn root(&self) -> &Url {
        &self.root
    }

    pub fn storage_options(&self) -> &HashMap<String, String> {
        &self.storage_options
    }

    /// URL of the Delta table called `name` (a directory under the root).
    pub fn table_url(&self, name: &str) -> Url {
        self.root
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
        let log = self.path(&format!("{name}/_delta_log/"));
        match self.store().list(Some(&log)).next().await {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(source)) => Err(LakeError::Store {
                path: log.to_string(),
                source,
            }),
        }
    }

    /// Checks that the store honours put-if-absent, which Delta commits and
    /// the ledger rely on: a second create of the same object must fail.
    pub async fn ensure_put_if_absent(&self) -> Result<(), LakeError> {
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
        let first = self
            .store
            .put_opts(&path, PutPayload::from_static(b"1"), create.clone())
            .await;
        if let Err(e) = first {
            return Err(refuse(e.to_string()));
        }
        let second = self
            .store
            .put_opts(&path, PutPayload::from_static(b"2"), create)
            .await;
        let _ = self.store.delete(&path).await;
        match second {
            Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(refuse(e.to_string())),
            Ok(_) => Err(refuse(
                "a second create of the same object succeeded".into(),
            )),
        }
    }

    /// The object store holding the lake, for ledger files.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Object path of `relative` (e.g. `_fhirlake/manifests/x.json`) in the store.
    pub fn path(&self, relative: &str) -> ObjectPath {
        ObjectPath::from_iter(relative.split('/').filter(|s| !s.is_empty()))
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
