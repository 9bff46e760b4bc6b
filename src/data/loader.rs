//! Bulk loading of annotation files from a directory, a `.tar.gz`/`.tgz`/`.tar` or a `.zip`.
//!
//! Archives are read as a stream (no temporary extraction). Reading and decompression are
//! serial; parsing runs in parallel on the rayon pool. The result is sorted by uniqueID, so
//! it does not depend on the archive order or the thread count.
//!
//! Strict mode (the default) stops at the first malformed file (in name order) with an
//! error naming the file and the field; `skip_bad` skips such files and lists them.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use rayon::prelude::*;

use super::annotation::{parse_annotation, Annotation};

/// How to treat malformed files.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Skip (and list) malformed files instead of stopping at the first.
    pub skip_bad: bool,
}

/// A file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BadFile {
    /// Name inside the source (`annotations/12.json`) or path of the file.
    pub file: String,
    pub error: String,
}

/// Annotations loaded from one source, sorted by uniqueID.
#[derive(Debug, Clone, Default)]
pub struct AnnotationSet {
    /// The directory or archive they came from.
    pub source: PathBuf,
    pub annotations: Vec<Annotation>,
    /// The file (or archive entry) each annotation came from, parallel to `annotations`.
    pub files: Vec<String>,
    /// Malformed files skipped with `skip_bad`.
    pub bad: Vec<BadFile>,
    /// Files whose name is not `<uniqueID>.json` (tolerated).
    pub misnamed: Vec<String>,
}

impl AnnotationSet {
    pub fn len(&self) -> usize {
        self.annotations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.annotations.is_empty()
    }

    /// Index of the annotation with `unique_id`.
    pub fn position(&self, unique_id: u64) -> Option<usize> {
        self.annotations
            .binary_search_by_key(&unique_id, |a| a.unique_id)
            .ok()
    }

    pub fn get(&self, unique_id: u64) -> Option<&Annotation> {
        self.position(unique_id).map(|i| &self.annotations[i])
    }
}

/// What kind of source a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceKind {
    Directory,
    TarGz,
    Tar,
    Zip,
}

fn source_kind(path: &Path) -> Result<SourceKind> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("{}: cannot read annotations", path.display()))?;
    if meta.is_dir() {
        return Ok(SourceKind::Directory);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Ok(SourceKind::TarGz)
    } else if name.ends_with(".tar") {
        Ok(SourceKind::Tar)
    } else if name.ends_with(".zip") {
        Ok(SourceKind::Zip)
    } else {
        bail!(
            "{}: not a directory, .tar.gz, .tgz, .tar or .zip of annotation JSON files",
            path.display()
        )
    }
}

/// JSON files the suite writes next to annotations that are not annotations: a dataset's
/// `split.json` (`data split`), `synth.json` (`data synth`), a patch folder's
/// `patches.json`, and the JSON files of a run directory.
pub const NOT_ANNOTATIONS: [&str; 7] = [
    "split.json",
    "synth.json",
    "patches.json",
    "config.json",
    "state.json",
    "checkpoint.json",
    "tokenizer.json",
];

/// Whether an archive entry or file name is an annotation (skips macOS resource forks and
/// the [`NOT_ANNOTATIONS`] files).
fn is_annotation_name(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    let lower = base.to_ascii_lowercase();
    lower.ends_with(".json")
        && !base.starts_with("._")
        && !name.starts_with("__MACOSX/")
        && !NOT_ANNOTATIONS.contains(&lower.as_str())
}

/// The annotations of a directory. A dataset directory's `annotations/` or
/// `annotations.tar.gz` / `.tgz` / `.zip` comes first, so that other JSON files at its top
/// level (`notes.json`, a tool's output) are never read as annotations; else the directory's
/// own JSON files.
fn directory_source(path: &Path) -> Result<(PathBuf, SourceKind)> {
    let nested = path.join("annotations");
    if nested.is_dir() {
        return Ok((nested, SourceKind::Directory));
    }
    for (name, kind) in [
        ("annotations.tar.gz", SourceKind::TarGz),
        ("annotations.tgz", SourceKind::TarGz),
        ("annotations.zip", SourceKind::Zip),
    ] {
        let archive = path.join(name);
        if archive.is_file() {
            return Ok((archive, kind));
        }
    }
    Ok((path.to_path_buf(), SourceKind::Directory))
}

/// Reads every annotation file's bytes: `(name, bytes)`, in name order.
fn read_raw(path: &Path, kind: SourceKind) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = match kind {
        SourceKind::Directory => {
            let dir = path;
            let mut names = Vec::new();
            for entry in std::fs::read_dir(dir)
                .with_context(|| format!("{}: cannot list directory", dir.display()))?
            {
                let entry =
                    entry.with_context(|| format!("{}: cannot list directory", dir.display()))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if is_annotation_name(&name) && entry.path().is_file() {
                    names.push(entry.path());
                }
            }
            // Reading files is I/O bound but cheap; do it in parallel with the parse.
            names
                .par_iter()
                .map(|p| {
                    let bytes = std::fs::read(p)
                        .with_context(|| format!("{}: cannot read", p.display()))?;
                    Ok((p.display().to_string(), bytes))
                })
                .collect::<Result<Vec<_>>>()?
        }
        SourceKind::TarGz | SourceKind::Tar => {
            let file =
                File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
            let reader: Box<dyn Read> = if kind == SourceKind::TarGz {
                Box::new(flate2::read::GzDecoder::new(BufReader::with_capacity(
                    1 << 16,
                    file,
                )))
            } else {
                Box::new(BufReader::new(file))
            };
            read_tar(reader).with_context(|| format!("{}: corrupt tar archive", path.display()))?
        }
        SourceKind::Zip => {
            read_zip(path).with_context(|| format!("{}: corrupt zip archive", path.display()))?
        }
    };
    files.sort_by_cached_key(|f| natural_key(&f.0));
    Ok(files)
}

/// Sorts `12.json` before `100.json` so "the first bad file" is the one a person expects.
fn natural_key(name: &str) -> (String, u64, String) {
    let (dir, base) = match name.rfind('/') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => ("", name),
    };
    let stem = base.strip_suffix(".json").unwrap_or(base);
    match stem.parse::<u64>() {
        Ok(n) => (dir.to_string(), n, String::new()),
        Err(_) => (dir.to_string(), u64::MAX, base.to_string()),
    }
}

/// Keeps an archive entry if it is an annotation file: `(name, bytes)`.
fn read_entry(
    name: String,
    entry: impl Read,
    size: u64,
    out: &mut Vec<(String, Vec<u8>)>,
) -> Result<()> {
    if !is_annotation_name(&name) {
        return Ok(());
    }
    // The size is the archive header's claim: never trust it for an allocation.
    ensure!(
        size <= MAX_ANNOTATION_BYTES,
        "entry {name}: {size} bytes is too large for an annotation file (limit {MAX_ANNOTATION_BYTES})"
    );
    let mut bytes = Vec::with_capacity(size.min(1 << 20) as usize);
    entry
        .take(MAX_ANNOTATION_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading entry {name}"))?;
    ensure!(
        bytes.len() as u64 <= MAX_ANNOTATION_BYTES,
        "entry {name}: larger than an annotation file can be (limit {MAX_ANNOTATION_BYTES} bytes)"
    );
    out.push((name, bytes));
    Ok(())
}

/// Largest annotation file read from an archive (real ones are a few kB; a polygon-heavy
/// one stays far below this).
pub const MAX_ANNOTATION_BYTES: u64 = 16 << 20;

/// The annotation files `(name, bytes)` of a tar stream (other entries are skipped).
pub fn read_tar(reader: impl Read) -> Result<Vec<(String, Vec<u8>)>> {
    let mut archive = tar::Archive::new(reader);
    let mut out = Vec::new();
    for entry in archive.entries()? {
        let entry = entry?;
        if entry.header().entry_type().is_file() {
            let name = entry.path()?.to_string_lossy().replace('\\', "/");
            let size = entry.size();
            read_entry(name, entry, size, &mut out)?;
        }
    }
    Ok(out)
}

fn read_zip(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file))?;
    let mut out = Vec::new();
    for i in 0..archive.len() {
        let entry = archive.by_index(i)?;
        if entry.is_file() {
            let name = entry.name()?.replace('\\', "/");
            let size = entry.size();
            read_entry(name, entry, size, &mut out)?;
        }
    }
    Ok(out)
}

/// Loads every annotation under `path` (directory, `.tar.gz`, `.tgz`, `.tar` or `.zip`; a
/// dataset directory's `annotations/` or `annotations.tar.gz` / `.tgz` / `.zip`).
///
/// Errors (strict mode): the first malformed file in name order, as
/// `<source>: <file>: field `x`: …`; duplicate uniqueIDs; a source with no annotations.
/// With `skip_bad`, a source none of whose files could be read is still an error.
pub fn load_annotations(path: &Path, options: LoadOptions) -> Result<AnnotationSet> {
    let (source, kind) = match source_kind(path)? {
        SourceKind::Directory => directory_source(path)?,
        kind => (path.to_path_buf(), kind),
    };
    let raw = read_raw(&source, kind)?;
    if raw.is_empty() {
        bail!("{}: no annotation *.json files found", path.display());
    }
    let parsed: Vec<(String, std::result::Result<Annotation, String>)> = raw
        .into_par_iter()
        .map(|(name, bytes)| {
            let result = parse_annotation(&bytes);
            (name, result)
        })
        .collect();

    let prefix = |name: &str| -> String {
        if kind == SourceKind::Directory {
            name.to_string()
        } else {
            format!("{}: {name}", source.display())
        }
    };

    let mut set = AnnotationSet {
        source: path.to_path_buf(),
        ..Default::default()
    };
    let mut seen: HashMap<u64, String> = HashMap::new();
    let mut rows = Vec::with_capacity(parsed.len());
    for (name, result) in parsed {
        let error = match result {
            Ok(ann) => match seen.get(&ann.unique_id) {
                Some(first) => format!("uniqueID {} already used by {first}", ann.unique_id),
                None => {
                    seen.insert(ann.unique_id, name.clone());
                    let base = name.rsplit('/').next().unwrap_or(&name);
                    if base != format!("{}.json", ann.unique_id) {
                        set.misnamed.push(name.clone());
                    }
                    rows.push((ann, name));
                    continue;
                }
            },
            Err(e) => e,
        };
        if !options.skip_bad {
            bail!("{}: {error}", prefix(&name));
        }
        set.bad.push(BadFile {
            file: prefix(&name),
            error,
        });
    }
    if rows.is_empty() {
        let first = &set.bad[0];
        bail!(
            "{}: none of the {} annotation files could be read (first: {}: {})",
            path.display(),
            set.bad.len(),
            first.file,
            first.error
        );
    }
    rows.sort_by_key(|(a, _)| a.unique_id);
    (set.annotations, set.files) = rows.into_iter().unzip();
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_puts_small_ids_first() {
        let mut names = vec!["a/100.json", "a/12.json", "a/x.json", "a/2.json"];
        names.sort_by_key(|n| natural_key(n));
        assert_eq!(
            names,
            vec!["a/2.json", "a/12.json", "a/100.json", "a/x.json"]
        );
    }

    #[test]
    fn skips_resource_forks() {
        assert!(is_annotation_name("annotations/1.json"));
        assert!(!is_annotation_name("annotations/._1.json"));
        assert!(!is_annotation_name("__MACOSX/annotations/1.json"));
        assert!(!is_annotation_name("annotations/README.md"));
    }
}
