//! Resolving a lake URI (`./lake`, `file:///data/lake`, `s3://bucket/prefix`).

use std::collections::HashMap;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use url::Url;

use super::LakeError;

/// A resolved lake root plus the storage options every table shares.
#[derive(Clone)]
pub struct Lake {
    root: Url,
    storage_options: HashMap<String, String>,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
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
        let (store, prefix) = object_store::parse_url_opts(&root, storage_options.iter())
            .map_err(|e| bad(format!("{e}; check the scheme and --storage-option values")))?;
        Ok(Self {
            root,
            storage_options,
            store: Arc::from(store),
            prefix,
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

    /// The object store holding the lake, for ledger files.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Object path of `relative` (e.g. `_fhirlake/manifests/x.json`) in the store.
    pub fn path(&self, relative: &str) -> ObjectPath {
        let mut parts: Vec<String> = self.prefix.parts().map(|p| p.as_ref().to_owned()).collect();
        parts.extend(
            relative
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
        ObjectPath::from_iter(parts)
    }
}
