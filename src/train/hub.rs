//! `--model` arguments: a local run directory, or a Hugging Face Hub model id.
//!
//! [`resolve_model`] is the one resolver behind every `--model` of the CLI:
//!
//! - an existing path is used as is (a run directory of `insar-mm train ...`);
//! - otherwise `owner/name` or `owner/name@revision` (a branch, tag or commit) names a Hub
//!   model repository holding the files of a run ([`RunFiles`]). Only the files inference
//!   needs are fetched, with the blocking API of the `hf-hub` crate, into the standard
//!   Hugging Face cache, and the snapshot folder `<cache>/models--owner--name/snapshots/<commit>/`
//!   is the run directory.
//!
//! The cache folder is chosen as `huggingface_hub` does: `HF_HUB_CACHE`, else `$HF_HOME/hub`,
//! else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`. With
//! `HF_HUB_OFFLINE=1` the cache alone is used and the network never. `HF_ENDPOINT` selects
//! another Hub server; `HF_TOKEN` (else the `token` file of `HF_HOME`) authenticates for
//! private or gated models.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

use super::caption::TOKENIZER_FILE;
use super::checkpoint::{BEST_MODEL_FILE, CONFIG_FILE, MODEL_FILE};

/// The Hub server used unless `HF_ENDPOINT` names another.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The files a command reads from a run: all of `required`, and the first of `weights` that
/// the run has (the order [`super::checkpoint::run_weights`] prefers).
#[derive(Debug, Clone, Copy)]
pub struct RunFiles {
    /// What kind of run this is, for messages.
    pub what: &'static str,
    pub required: &'static [&'static str],
    pub weights: &'static [&'static str],
}

impl RunFiles {
    /// A `train caption` run (`insar-mm caption`, `eval caption`).
    pub const CAPTION: RunFiles = RunFiles {
        what: "caption run",
        required: &[CONFIG_FILE, TOKENIZER_FILE],
        weights: &[BEST_MODEL_FILE, MODEL_FILE],
    };
    /// A `train classify|segment` run (`predict`, `eval classify|segment`).
    pub const HEAD: RunFiles = RunFiles {
        what: "classify/segment run",
        required: &[CONFIG_FILE],
        weights: &[BEST_MODEL_FILE, MODEL_FILE],
    };
    /// A `train pretrain` run read for its last weights (`embed`).
    pub const PRETRAIN_LAST: RunFiles = RunFiles {
        what: "pretrain run",
        required: &[CONFIG_FILE],
        weights: &[MODEL_FILE],
    };
    /// A `train pretrain` run read for its best weights (`embed --best`).
    pub const PRETRAIN_BEST: RunFiles = RunFiles {
        what: "pretrain run",
        required: &[CONFIG_FILE],
        weights: &[BEST_MODEL_FILE],
    };

    fn describe(&self) -> String {
        let mut s = self.required.join(", ");
        s.push_str(" and ");
        s.push_str(&self.weights.join(" or "));
        s
    }
}

/// A Hub model id, `owner/name` with an optional `@revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubId {
    /// `owner/name`.
    pub repo: String,
    /// Branch, tag or commit; `None` = `main`.
    pub revision: Option<String>,
}

impl fmt::Display for HubId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.revision {
            Some(r) => write!(f, "{}@{r}", self.repo),
            None => f.write_str(&self.repo),
        }
    }
}

/// A repository name part: the characters and shapes the Hub accepts.
fn check_name_part(part: &str, which: &str) -> Result<(), String> {
    if part.is_empty() {
        return Err(format!("the {which} is empty"));
    }
    if let Some(c) = part
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!("the {which} `{part}` contains {c:?}"));
    }
    if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
        return Err(format!(
            "the {which} `{part}` starts or ends with `-` or `.`"
        ));
    }
    if part.contains("--") || part.contains("..") {
        return Err(format!("the {which} `{part}` contains `--` or `..`"));
    }
    Ok(())
}

impl HubId {
    /// Parses `owner/name` or `owner/name@revision`; the error says what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (repo, revision) = match s.split_once('@') {
            Some((repo, rev)) => (repo, Some(rev)),
            None => (s, None),
        };
        let Some((owner, name)) = repo.split_once('/') else {
            return Err("a Hub id has the form `owner/name`".into());
        };
        if name.contains('/') {
            return Err("a Hub id has exactly one `/` (`owner/name`)".into());
        }
        check_name_part(owner, "owner")?;
        check_name_part(name, "model name")?;
        if repo.len() > 96 {
            return Err("a Hub id has at most 96 characters".into());
        }
        if let Some(rev) = revision {
            if rev.is_empty() {
                return Err("the revision after `@` is empty".into());
            }
            if let Some(c) = rev.chars().find(|c| {
                c.is_control()
                    || c.is_whitespace()
                    || matches!(c, '@' | '\\' | '~' | '^' | ':' | '?' | '*' | '[')
            }) {
                return Err(format!("the revision `{rev}` contains {c:?}"));
            }
            if rev.contains("..") || rev.starts_with('/') || rev.ends_with('/') {
                return Err(format!(
                    "the revision `{rev}` is not a valid branch, tag or commit"
                ));
            }
        }
        Ok(Self {
            repo: repo.to_string(),
            revision: revision.map(str::to_string),
        })
    }

    /// The revision asked for (`main` by default).
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    /// The repository's folder in the cache (`models--owner--name`).
    pub fn cache_folder(&self) -> String {
        Repo::new(self.repo.clone(), RepoType::Model).folder_name()
    }
}

fn env_nonempty(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// The Hugging Face home: `HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else
/// `~/.cache/huggingface`.
fn hf_home() -> Result<PathBuf> {
    if let Some(h) = env_nonempty("HF_HOME") {
        return Ok(h.into());
    }
    if let Some(x) = env_nonempty("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(x).join("huggingface"));
    }
    let home = dirs::home_dir()
        .context("no home folder to put the Hugging Face cache in: set HF_HOME or HF_HUB_CACHE")?;
    Ok(home.join(".cache").join("huggingface"))
}

/// The Hub cache folder (`HF_HUB_CACHE`, else `<HF home>/hub`).
pub fn hub_cache_dir() -> Result<PathBuf> {
    match env_nonempty("HF_HUB_CACHE") {
        Some(c) => Ok(c.into()),
        None => Ok(hf_home()?.join("hub")),
    }
}

/// Whether `HF_HUB_OFFLINE` asks for the cache only (`1`, `true`, `yes`, `on`, any case).
pub fn offline() -> bool {
    env_nonempty("HF_HUB_OFFLINE").is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// `HF_TOKEN`, else the token file of the Hugging Face home (`huggingface-cli login`).
fn token() -> Option<String> {
    if let Some(t) = env_nonempty("HF_TOKEN") {
        return Some(t.trim().to_string());
    }
    let path = hf_home().ok()?.join("token");
    let t = std::fs::read_to_string(path).ok()?;
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_string())
}

fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The run directory `arg` names: an existing path as is, else the snapshot of the Hub model
/// `arg` (fetched unless `HF_HUB_OFFLINE` is set) holding `files`. `progress` shows download
/// bars.
pub fn resolve_model(arg: &Path, files: &RunFiles, progress: bool) -> Result<PathBuf> {
    if arg.exists() {
        return Ok(arg.to_path_buf());
    }
    let shapes = "expected a run directory (`insar-mm train ... --out RUN`) or a Hugging Face Hub \
                  id `owner/name` or `owner/name@revision`";
    let s = arg
        .to_str()
        .with_context(|| format!("--model {}: no such run directory; {shapes}", arg.display()))?;
    let id = HubId::parse(s).map_err(|why| {
        anyhow!(
            "--model {s}: no such run directory, and not a Hugging Face Hub id ({why}); {shapes}"
        )
    })?;
    let cache = hub_cache_dir()?;
    let snapshot = if offline() {
        from_cache(&id, files, &cache)
    } else {
        let endpoint = env_nonempty("HF_ENDPOINT")
            .map(|e| e.trim_end_matches('/').to_string())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        download(&id, files, &cache, &endpoint, token(), progress)
    }
    .with_context(|| {
        format!("--model {s} (no such local directory; used as a Hugging Face Hub id)")
    })?;
    log::info!("--model {s}: {}", snapshot.display());
    Ok(snapshot)
}

/// The commit `id`'s revision points to in the cache and its snapshot folder, if cached.
fn cached_snapshot(id: &HubId, cache: &Path) -> Option<(String, PathBuf)> {
    let repo_dir = cache.join(id.cache_folder());
    let rev = id.revision();
    let commit = match std::fs::read_to_string(repo_dir.join("refs").join(rev)) {
        Ok(c) => c.trim().to_string(),
        Err(_) if is_commit_hash(rev) => rev.to_string(),
        Err(_) => return None,
    };
    let snapshot = repo_dir.join("snapshots").join(&commit);
    snapshot.is_dir().then_some((commit, snapshot))
}

/// `HF_HUB_OFFLINE`: the cached snapshot, which must hold the run's files.
fn from_cache(id: &HubId, files: &RunFiles, cache: &Path) -> Result<PathBuf> {
    let rev = id.revision();
    let Some((commit, snapshot)) = cached_snapshot(id, cache) else {
        bail!(
            "HF_HUB_OFFLINE is set and the Hub model `{}` (revision `{rev}`) is not in the cache \
             folder {}: fetch it once without HF_HUB_OFFLINE, or pass a local run directory",
            id.repo,
            cache.display()
        );
    };
    let missing = |f: &str| {
        anyhow!(
            "HF_HUB_OFFLINE is set and the cached Hub model `{}` (revision `{rev}`, commit {commit}) \
             has no {f} in {}: fetch it once without HF_HUB_OFFLINE, or pass a local run directory \
             (a {} needs {})",
            id.repo,
            snapshot.display(),
            files.what,
            files.describe()
        )
    };
    for f in files.required {
        if !snapshot.join(f).is_file() {
            return Err(missing(f));
        }
    }
    if !files.weights.iter().any(|f| snapshot.join(f).is_file()) {
        return Err(missing(&files.weights.join(" or ")));
    }
    Ok(snapshot)
}

/// Fetches from `endpoint` the run's files of `id` (those not already in the snapshot) and returns the
/// snapshot folder of the commit the revision points to now.
fn download(
    id: &HubId,
    files: &RunFiles,
    cache: &Path,
    endpoint: &str,
    token: Option<String>,
    progress: bool,
) -> Result<PathBuf> {
    let hub_err = |e: ApiError| hub_error(id, endpoint, cache, e);
    let api = ApiBuilder::from_cache(Cache::new(cache.to_path_buf()))
        .with_endpoint(endpoint.to_string())
        .with_token(token)
        .with_progress(progress)
        .build()
        .map_err(hub_err)?;
    let rev = id.revision();
    let info = api
        .repo(Repo::with_revision(
            id.repo.clone(),
            RepoType::Model,
            rev.to_string(),
        ))
        .info()
        .map_err(hub_err)?;
    let commit = info.sha;
    let present: HashSet<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let not_a_run = |f: &str| {
        anyhow!(
            "the Hub model `{}` (revision `{rev}`, commit {commit}) has no {f}: not an insar-mm {} \
             (which needs {})",
            id.repo,
            files.what,
            files.describe()
        )
    };
    let mut wanted: Vec<&str> = Vec::new();
    for f in files.required {
        if !present.contains(f) {
            return Err(not_a_run(f));
        }
        wanted.push(f);
    }
    let weights = files
        .weights
        .iter()
        .find(|f| present.contains(*f))
        .ok_or_else(|| not_a_run(&files.weights.join(" or ")))?;
    wanted.push(weights);

    let snapshot = cache
        .join(id.cache_folder())
        .join("snapshots")
        .join(&commit);
    let pinned = api.repo(Repo::with_revision(
        id.repo.clone(),
        RepoType::Model,
        commit.clone(),
    ));
    for f in wanted {
        if snapshot.join(f).is_file() {
            continue;
        }
        let got = pinned.download(f).map_err(hub_err)?;
        if got != snapshot.join(f) {
            bail!(
                "the Hub served {f} of `{}` at {} instead of {}",
                id.repo,
                got.display(),
                snapshot.join(f).display()
            );
        }
    }
    if rev != commit {
        // Later offline runs find the revision through refs/<revision>.
        Cache::new(cache.to_path_buf())
            .repo(Repo::with_revision(
                id.repo.clone(),
                RepoType::Model,
                rev.to_string(),
            ))
            .create_ref(&commit)
            .with_context(|| format!("{}: cannot write the ref `{rev}`", cache.display()))?;
    }
    Ok(snapshot)
}

/// A clear message for a failed Hub request.
fn hub_error(id: &HubId, endpoint: &str, cache: &Path, e: ApiError) -> anyhow::Error {
    let rev = id.revision();
    let advice = format!(
        "pass a local run directory instead, or set HF_HUB_OFFLINE=1 to use a copy already in the \
         cache folder {}",
        cache.display()
    );
    let ApiError::RequestError(req) = &e else {
        return anyhow!("fetching `{id}` from the Hugging Face Hub ({endpoint}): {e}; {advice}");
    };
    match req.as_ref() {
        ureq::Error::Status(code, response) => {
            match response.header("x-error-code").unwrap_or_default() {
                "RevisionNotFound" => anyhow!(
                    "the Hub model `{}` has no revision `{rev}` (HTTP {code} from {endpoint}); {advice}",
                    id.repo
                ),
                "EntryNotFound" => anyhow!(
                    "a file of the Hub model `{}` (revision `{rev}`) is missing (HTTP {code} from {endpoint}): {e}",
                    id.repo
                ),
                _ if matches!(code, 401 | 403 | 404) => anyhow!(
                    "the Hugging Face Hub has no model `{}` at revision `{rev}` (HTTP {code} from \
                     {endpoint}; a private or gated model needs HF_TOKEN); {advice}",
                    id.repo
                ),
                _ => anyhow!(
                    "the Hugging Face Hub ({endpoint}) answered HTTP {code} for `{id}`; {advice}"
                ),
            }
        }
        ureq::Error::Transport(t) => anyhow!(
            "cannot reach the Hugging Face Hub at {endpoint} to fetch `{id}` ({t}); {advice}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_id_parser_accepts_ids_and_revisions() {
        let id = HubId::parse("insar-lab/caption-tiny").unwrap();
        assert_eq!(id.repo, "insar-lab/caption-tiny");
        assert_eq!(id.revision, None);
        assert_eq!(id.revision(), "main");
        assert_eq!(id.to_string(), "insar-lab/caption-tiny");
        assert_eq!(id.cache_folder(), "models--insar-lab--caption-tiny");
        let id = HubId::parse("Org_1/model.v2@refs/pr/3").unwrap();
        assert_eq!(id.repo, "Org_1/model.v2");
        assert_eq!(id.revision(), "refs/pr/3");
        assert_eq!(id.to_string(), "Org_1/model.v2@refs/pr/3");
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let id = HubId::parse(&format!("a/b@{sha}")).unwrap();
        assert_eq!(id.revision(), sha);
        assert!(is_commit_hash(sha) && !is_commit_hash("main") && !is_commit_hash(&sha[1..]));
    }

    #[test]
    fn hub_id_parser_rejects_what_the_hub_rejects() {
        for (bad, why) in [
            ("caption-tiny", "owner/name"),
            ("runs/caption/tiny", "exactly one `/`"),
            ("./run", "starts or ends"),
            ("/abs", "owner is empty"),
            ("owner/", "model name is empty"),
            ("own er/x", "contains ' '"),
            ("a--b/x", "`--`"),
            ("a/x..y", "`..`"),
            ("a/x-", "starts or ends"),
            ("a/x@", "revision after `@` is empty"),
            ("a/x@v 1", "contains ' '"),
            ("a/x@a..b", "not a valid"),
            ("a/x@b@c", "contains '@'"),
        ] {
            let err = HubId::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let long = format!("{}/{}", "o".repeat(50), "n".repeat(50));
        assert!(HubId::parse(&long).unwrap_err().contains("96"));
    }

    #[test]
    fn cache_lookup_follows_refs_and_the_files_of_each_run_kind() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path();
        let commit = "89abcdef0123456789abcdef0123456789abcdef";
        let repo = cache.join("models--o--head");
        let snap = repo.join("snapshots").join(commit);
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), format!("{commit}\n")).unwrap();
        std::fs::write(snap.join(CONFIG_FILE), "{}").unwrap();
        let id = |s: &str| HubId::parse(s).unwrap();
        // No weights yet: the error names both candidates, the commit and the snapshot.
        let e = format!(
            "{:#}",
            from_cache(&id("o/head"), &RunFiles::HEAD, cache).unwrap_err()
        );
        assert!(
            e.contains("best.safetensors or model.safetensors") && e.contains(commit),
            "{e}"
        );
        // The last weights alone serve a head run and `embed`, not `embed --best`.
        std::fs::write(snap.join(MODEL_FILE), "w").unwrap();
        assert_eq!(
            from_cache(&id("o/head"), &RunFiles::HEAD, cache).unwrap(),
            snap
        );
        assert_eq!(
            from_cache(&id("o/head"), &RunFiles::PRETRAIN_LAST, cache).unwrap(),
            snap
        );
        let e = format!(
            "{:#}",
            from_cache(&id("o/head"), &RunFiles::PRETRAIN_BEST, cache).unwrap_err()
        );
        assert!(e.contains("best.safetensors"), "{e}");
        // A commit hash needs no ref; an unknown branch is not cached; a caption run needs
        // its tokenizer.
        assert_eq!(
            from_cache(&id(&format!("o/head@{commit}")), &RunFiles::HEAD, cache).unwrap(),
            snap
        );
        let e = format!(
            "{:#}",
            from_cache(&id("o/head@dev"), &RunFiles::HEAD, cache).unwrap_err()
        );
        assert!(e.contains("`dev`") && e.contains("not in the cache"), "{e}");
        let e = format!(
            "{:#}",
            from_cache(&id("o/head"), &RunFiles::CAPTION, cache).unwrap_err()
        );
        assert!(e.contains("tokenizer.json"), "{e}");
    }

    /// A minimal Hub server on 127.0.0.1: the repo-info API of `repo` at `rev` (commit
    /// `commit`, files `files`) and the `resolve` downloads of those files, with the headers
    /// `hf-hub` reads. Every request path is recorded.
    struct FakeHub {
        endpoint: String,
        requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    }

    fn fake_hub(
        repo: &'static str,
        rev: &'static str,
        commit: &'static str,
        files: Vec<(&'static str, Vec<u8>)>,
    ) -> FakeHub {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                reader.read_line(&mut first).unwrap();
                let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut range: (usize, Option<usize>) = (0, None);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(r) = lower.strip_prefix("range: bytes=") {
                        let (a, b) = r.trim().split_once('-').unwrap();
                        range = (a.parse().unwrap(), b.parse().ok());
                    }
                }
                log.lock().unwrap().push(path.clone());
                let info = format!("/api/models/{repo}/revision/{rev}");
                let resolve = format!("/{repo}/resolve/{commit}/");
                let not_found = |code: &str| {
                    format!(
                        "HTTP/1.1 404 Not Found\r\nX-Error-Code: {code}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    .into_bytes()
                };
                let reply: Vec<u8> = if path == info {
                    let siblings: Vec<String> = files
                        .iter()
                        .map(|(f, _)| format!("{{\"rfilename\":\"{f}\"}}"))
                        .collect();
                    let body = format!(
                        "{{\"sha\":\"{commit}\",\"siblings\":[{}]}}",
                        siblings.join(",")
                    );
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .into_bytes()
                } else if path.starts_with(&format!("/api/models/{repo}/revision/")) {
                    not_found("RevisionNotFound")
                } else if path.starts_with("/api/models/") {
                    not_found("RepoNotFound")
                } else if let Some((f, data)) = path
                    .strip_prefix(&resolve)
                    .and_then(|f| files.iter().find(|(n, _)| *n == f))
                {
                    let (start, end) = (range.0, range.1.unwrap_or(data.len() - 1));
                    let body = &data[start..=end];
                    let mut r = format!(
                        "HTTP/1.1 206 Partial Content\r\nETag: \"blob-{f}\"\r\nX-Repo-Commit: {commit}\r\nContent-Range: bytes {start}-{end}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        data.len(),
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(body);
                    r
                } else {
                    not_found("EntryNotFound")
                };
                let _ = stream.write_all(&reply);
            }
        });
        FakeHub { endpoint, requests }
    }

    #[test]
    fn download_fetches_only_the_run_files_into_the_cache_layout() {
        const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
        let files = vec![
            ("config.json", b"{\"seed\": 1}".to_vec()),
            ("tokenizer.json", b"{\"tok\": true}".to_vec()),
            ("model.safetensors", vec![7u8; 3000]),
            ("metrics.jsonl", b"{}\n".to_vec()),
        ];
        let hub = fake_hub("owner/run", "main", COMMIT, files.clone());
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("hub");
        let id = HubId::parse("owner/run").unwrap();
        let snap = download(&id, &RunFiles::CAPTION, &cache, &hub.endpoint, None, false).unwrap();
        assert_eq!(
            snap,
            cache
                .join("models--owner--run")
                .join("snapshots")
                .join(COMMIT)
        );
        for (f, data) in &files[..3] {
            assert_eq!(&std::fs::read(snap.join(f)).unwrap(), data, "{f}");
        }
        // best.safetensors is absent on the Hub: model.safetensors is used, and nothing else
        // (metrics.jsonl) is fetched.
        assert!(!snap.join("metrics.jsonl").exists() && !snap.join("best.safetensors").exists());
        let asked = hub.requests.lock().unwrap().clone();
        assert!(
            asked
                .iter()
                .all(|p| !p.contains("metrics") && !p.contains("best")),
            "{asked:?}"
        );
        assert_eq!(
            std::fs::read_to_string(cache.join("models--owner--run/refs/main")).unwrap(),
            COMMIT
        );
        // The cache now serves the same snapshot offline, and a second download fetches
        // nothing but the repo info.
        assert_eq!(from_cache(&id, &RunFiles::CAPTION, &cache).unwrap(), snap);
        let before = hub.requests.lock().unwrap().len();
        download(&id, &RunFiles::CAPTION, &cache, &hub.endpoint, None, false).unwrap();
        let after = hub.requests.lock().unwrap()[before..].to_vec();
        assert_eq!(
            after,
            vec!["/api/models/owner/run/revision/main".to_string()]
        );

        // Unknown revision, unknown repo, a repo that is not a run of this kind.
        let err = |id: &str, files: &RunFiles| {
            let id = HubId::parse(id).unwrap();
            format!(
                "{:#}",
                download(&id, files, &cache, &hub.endpoint, None, false).unwrap_err()
            )
        };
        let e = err("owner/run@v9", &RunFiles::CAPTION);
        assert!(
            e.contains("no revision `v9`") && e.contains("HF_HUB_OFFLINE"),
            "{e}"
        );
        let e = err("owner/other", &RunFiles::CAPTION);
        assert!(
            e.contains("has no model `owner/other`") && e.contains("HTTP 404"),
            "{e}"
        );
        let e = err("owner/run", &RunFiles::PRETRAIN_BEST);
        assert!(
            e.contains("has no best.safetensors") && e.contains(COMMIT),
            "{e}"
        );
    }
}
