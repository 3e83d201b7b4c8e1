//! The object store that holds Sluice's Parquet files and its catalog, and how it is reached.
//!
//! [`ObjectStorage`] wraps any `object_store` backend (a local folder, memory, S3, GCS, Azure)
//! with what persistence relies on: every call is retried with exponential backoff on errors
//! that may pass (network, throttling, a flaky disk), never on ones that will not (not found,
//! already exists), and a put into the local folder is fsynced before it returns, so that
//! "written" means durable, as it does for the cloud stores.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// Which backend holds the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectStoreKind {
    /// A folder on local disk (`<data-dir>/lake` unless configured otherwise).
    File,
    /// Process memory: gone on restart. For tests.
    Memory,
    /// Amazon S3 or any S3-compatible store (MinIO, Ceph, R2...).
    S3,
    /// Google Cloud Storage.
    Gcs,
    /// Azure Blob Storage.
    Azure,
}

impl std::str::FromStr for ObjectStoreKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "file" => ObjectStoreKind::File,
            "memory" => ObjectStoreKind::Memory,
            "s3" => ObjectStoreKind::S3,
            "gcs" | "google" => ObjectStoreKind::Gcs,
            "azure" => ObjectStoreKind::Azure,
            other => {
                return Err(format!(
                    "unknown object store '{other}'; use file, memory, s3, gcs or azure"
                ));
            }
        })
    }
}

/// Where and how to reach the object store. Credentials not given here come from the usual
/// environment variables of each cloud (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
#[derive(Debug, Clone)]
pub struct ObjectStoreConfig {
    pub kind: ObjectStoreKind,
    /// Root folder of the `file` store.
    pub root: PathBuf,
    /// Bucket (S3, GCS) or container (Azure).
    pub bucket: Option<String>,
    /// S3 region.
    pub aws_region: Option<String>,
    /// S3 endpoint, for S3-compatible stores (e.g. `http://127.0.0.1:9000` for MinIO).
    pub aws_endpoint: Option<String>,
    pub aws_access_key_id: Option<String>,
    pub aws_secret_access_key: Option<String>,
    /// Allow plain `http://` endpoints.
    pub aws_allow_http: bool,
}

impl ObjectStoreConfig {
    /// A `file` store rooted at `root`.
    pub fn file(root: impl Into<PathBuf>) -> Self {
        ObjectStoreConfig {
            kind: ObjectStoreKind::File,
            root: root.into(),
            bucket: None,
            aws_region: None,
            aws_endpoint: None,
            aws_access_key_id: None,
            aws_secret_access_key: None,
            aws_allow_http: false,
        }
    }
}

/// Errors reaching the object store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot set up the {kind:?} object store: {message}")]
    Config {
        kind: ObjectStoreKind,
        message: String,
    },
    #[error("object store {op} of '{path}' failed after {attempts} attempts: {source}")]
    Failed {
        op: &'static str,
        path: String,
        attempts: u32,
        source: object_store::Error,
    },
    #[error("cannot make '{path}' durable on local disk: {source}")]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How calls are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each further one.
    pub first_backoff: Duration,
    /// Longest single wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// The object store, with retries and durable puts.
#[derive(Debug, Clone)]
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    /// For the `file` store: its root, so that puts can be fsynced.
    local_root: Option<PathBuf>,
    retry: RetryPolicy,
    description: String,
}

impl ObjectStorage {
    /// Builds the store `config` describes.
    pub fn from_config(config: &ObjectStoreConfig) -> Result<Self> {
        let kind = config.kind;
        let bad = |message: String| Error::Config { kind, message };
        let need_bucket = || {
            config
                .bucket
                .clone()
                .ok_or_else(|| bad("no bucket given; pass --bucket (or SLUICE_BUCKET)".to_string()))
        };
        let (store, local_root, description): (Arc<dyn ObjectStore>, _, _) = match kind {
            ObjectStoreKind::File => {
                std::fs::create_dir_all(&config.root)
                    .map_err(|e| bad(format!("cannot create {}: {e}", config.root.display())))?;
                let root = std::fs::canonicalize(&config.root)
                    .map_err(|e| bad(format!("cannot resolve {}: {e}", config.root.display())))?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&root)
                    .map_err(|e| bad(e.to_string()))?;
                let description = format!("file://{}", root.display());
                (Arc::new(store), Some(root), description)
            }
            ObjectStoreKind::Memory => (
                Arc::new(object_store::memory::InMemory::new()),
                None,
                "memory".to_string(),
            ),
            ObjectStoreKind::S3 => {
                let bucket = need_bucket()?;
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(&bucket)
                    .with_allow_http(config.aws_allow_http);
                if let Some(r) = &config.aws_region {
                    b = b.with_region(r);
                }
                if let Some(e) = &config.aws_endpoint {
                    b = b.with_endpoint(e);
                }
                if let Some(k) = &config.aws_access_key_id {
                    b = b.with_access_key_id(k);
                }
                if let Some(s) = &config.aws_secret_access_key {
                    b = b.with_secret_access_key(s);
                }
                let store = b.build().map_err(|e| bad(e.to_string()))?;
                (Arc::new(store), None, format!("s3://{bucket}"))
            }
            ObjectStoreKind::Gcs => {
                let bucket = need_bucket()?;
                let store = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(&bucket)
                    .build()
                    .map_err(|e| bad(e.to_string()))?;
                (Arc::new(store), None, format!("gs://{bucket}"))
            }
            ObjectStoreKind::Azure => {
                let container = need_bucket()?;
                let store = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(&container)
                    .build()
                    .map_err(|e| bad(e.to_string()))?;
                (Arc::new(store), None, format!("az://{container}"))
            }
        };
        Ok(ObjectStorage {
            store,
            local_root,
            retry: RetryPolicy::default(),
            description,
        })
    }

    /// A store in process memory.
    pub fn memory() -> Self {
        Self::from_store(Arc::new(object_store::memory::InMemory::new()), "memory")
    }

    /// Wraps an existing store (tests inject faulty ones this way).
    pub fn from_store(store: Arc<dyn ObjectStore>, description: &str) -> Self {
        ObjectStorage {
            store,
            local_root: None,
            retry: RetryPolicy::default(),
            description: description.to_string(),
        }
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The underlying store, for readers that bring their own retries (DataFusion).
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Where the store is, for logs: `file:///...`, `s3://bucket`, `memory`.
    pub fn description(&self) -> &str {
        &self.description
    }

    async fn retrying<T, F, Fut>(&self, op: &'static str, path: &Path, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = object_store::Result<T>>,
    {
        let mut backoff = self.retry.first_backoff;
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) if attempt < self.retry.attempts && is_transient(&e) => {
                    tracing::warn!(
                        op,
                        path = %path,
                        attempt,
                        "object store call failed, retrying in {backoff:?}: {e}"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.retry.max_backoff);
                    attempt += 1;
                }
                Err(source) => {
                    return Err(Error::Failed {
                        op,
                        path: path.to_string(),
                        attempts: attempt,
                        source,
                    });
                }
            }
        }
    }

    /// Writes `bytes` at `path`, replacing what was there, atomically (readers see the old or
    /// the new object, never a part), and durably: on the local store the file and every
    /// folder up to the root are fsynced before this returns.
    pub async fn put(&self, path: &Path, bytes: Bytes) -> Result<()> {
        self.retrying("put", path, || {
            self.store.put(path, PutPayload::from_bytes(bytes.clone()))
        })
        .await?;
        if let Some(root) = &self.local_root {
            let file = root.join(path.as_ref());
            let sync = |p: &FsPath| std::fs::File::open(p).and_then(|f| f.sync_all());
            sync(&file).map_err(|source| Error::Sync {
                path: file.clone(),
                source,
            })?;
            // every folder from the file's up to the root: the put may have created
            // `dbs/<db>/<table>/<day>/`, and a folder's entry is durable only once its parent
            // is synced (else a power loss can take a file the catalog lists)
            for dir in file.ancestors().skip(1).take_while(|d| d.starts_with(root)) {
                sync(dir).map_err(|source| Error::Sync {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// The object at `path`, or `None` if there is none.
    pub async fn get(&self, path: &Path) -> Result<Option<Bytes>> {
        let got = self
            .retrying("get", path, || async {
                match self.store.get(path).await {
                    Ok(r) => r.bytes().await.map(Some),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?;
        Ok(got)
    }

    /// The paths of every object under `prefix`.
    pub async fn list(&self, prefix: &Path) -> Result<Vec<Path>> {
        use futures::TryStreamExt;
        self.retrying("list", prefix, || async {
            self.store
                .list(Some(prefix))
                .map_ok(|meta| meta.location)
                .try_collect()
                .await
        })
        .await
    }

    /// Deletes the object at `path`; deleting one that is not there is not an error.
    pub async fn delete(&self, path: &Path) -> Result<()> {
        self.retrying("delete", path, || async {
            match self.store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
    }
}

/// Whether trying again may help.
fn is_transient(e: &object_store::Error) -> bool {
    !matches!(
        e,
        object_store::Error::NotFound { .. }
            | object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. }
            | object_store::Error::NotModified { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. }
            | object_store::Error::InvalidPath { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::UnknownConfigurationKey { .. }
    )
}
