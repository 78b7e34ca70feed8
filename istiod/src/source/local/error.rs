//! Errors of the local directory source: each says where it came from (file,
//! document, object) and what is wrong (field path and reason).

use std::fmt;
use std::path::PathBuf;

/// Where in the configuration directory something was found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Place {
    pub file: PathBuf,
    /// 1-based index of the YAML document in the file.
    pub document: usize,
    /// 1-based line where the document starts.
    pub line: usize,
    /// 0-based index in `items` when the document is a `kind: List`.
    pub item: Option<usize>,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} document {} (line {})", self.file.display(), self.document, self.line)?;
        if let Some(item) = self.item {
            write!(f, " items[{item}]")?;
        }
        Ok(())
    }
}

/// What is wrong with a file, a document or an object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("cannot read: {0}")]
    Read(String),
    #[error("file is not valid UTF-8")]
    NotUtf8,
    #[error("YAML syntax error at line {line} column {column}: {message}")]
    Syntax { line: usize, column: usize, message: String },
    #[error("the document is not a mapping")]
    NotAMapping,
    #[error("{field}: Required value")]
    Required { field: String },
    #[error("{field}: Invalid value: {message}")]
    Invalid { field: String, message: String },
    #[error("{field}: unknown field")]
    UnknownField { field: String },
    #[error("no kind {kind} is registered for version {api_version}")]
    UnknownKind { api_version: String, kind: String },
    #[error("version {version} of {kind} is not served")]
    UnservedVersion { kind: String, version: String },
    #[error("metadata.namespace: Invalid value: {namespace:?}: {kind} is cluster-scoped")]
    NamespaceOnClusterScoped { kind: String, namespace: String },
    #[error("{field}: {message}")]
    Decode { field: String, message: String },
    #[error("duplicate object: also defined in {other}")]
    Duplicate { other: Place },
    #[error("no schema for {0}: the embedded CRD does not parse")]
    NoSchema(String),
}

/// One error: where, which object (kind, and namespace/name when known), what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalError {
    pub file: PathBuf,
    /// The document (and List item); `None` for errors about the whole file.
    pub place: Option<Place>,
    /// `Kind namespace/name` (or just the kind) once known.
    pub object: Option<String>,
    pub problem: Problem,
}

impl LocalError {
    pub(crate) fn file(file: PathBuf, problem: Problem) -> Self {
        LocalError { file, place: None, object: None, problem }
    }

    pub(crate) fn at(place: &Place, object: Option<String>, problem: Problem) -> Self {
        LocalError { file: place.file.clone(), place: Some(place.clone()), object, problem }
    }
}

impl fmt::Display for LocalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.place {
            Some(place) => write!(f, "{place}")?,
            None => write!(f, "{}", self.file.display())?,
        }
        if let Some(object) = &self.object {
            write!(f, " ({object})")?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for LocalError {}

/// Why the source could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("config directory {0} does not exist")]
    Missing(PathBuf),
    #[error("config path {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("cannot read config directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
