use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;

use super::config::{FileConfig, FsyncPolicy};
use crate::sink::record::{ndjson, Record, RecordTransport};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// The blocking task doing the I/O panicked or was cancelled.
    #[error("file task failed: {0}")]
    Task(String),
}

pub struct FileTransport {
    config: Arc<FileConfig>,
    /// Blocking file I/O runs on tokio's blocking threads; the lock orders the batches.
    state: Arc<Mutex<Option<ActiveFile>>>,
}

struct ActiveFile {
    file: File,
    len: u64,
    started: Instant,
    /// Number the next rotated file gets.
    next_rotation: u64,
}

impl FileTransport {
    pub fn new(config: FileConfig) -> Self {
        FileTransport { config: Arc::new(config), state: Arc::new(Mutex::new(None)) }
    }

    async fn blocking<R: Send + 'static>(
        &self,
        work: impl FnOnce(&FileConfig, &mut Option<ActiveFile>) -> std::io::Result<R> + Send + 'static,
    ) -> Result<R, FileError> {
        let (config, state) = (self.config.clone(), self.state.clone());
        let path = config.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut state = state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            work(&config, &mut state)
        })
        .await
        .map_err(|e| FileError::Task(e.to_string()))?
        .map_err(|source| FileError::Io { path, source })
    }
}

#[async_trait]
impl RecordTransport for FileTransport {
    type Error = FileError;
    type Progress = ();

    fn describe(&self) -> String {
        format!("file {}", self.config.path.display())
    }

    async fn open(&self) -> Result<(), FileError> {
        self.blocking(|config, state| {
            *state = Some(ActiveFile::open(config)?);
            Ok(())
        })
        .await
    }

    async fn send(&self, records: &[Record], _: &mut ()) -> Result<(), FileError> {
        let buf = ndjson(records);
        self.blocking(move |config, state| {
            if state.is_none() {
                *state = Some(ActiveFile::open(config)?);
            }
            let active = state.as_mut().expect("opened above");
            if let Err(e) = active.append(&buf, config.fsync) {
                // Whatever part was written goes, so that the retry leaves no broken line.
                let _ = active.file.set_len(active.len);
                return Err(e);
            }
            if active.len >= config.rotate_bytes || config.rotate_every.is_some_and(|every| active.started.elapsed() >= every) {
                let next = active.next_rotation;
                *state = None;
                rotate(config, next)?;
                *state = Some(ActiveFile::open(config)?);
            }
            Ok(())
        })
        .await
    }

    /// A clean stop leaves every line on disk, whatever the fsync policy was while running.
    async fn close(&self) -> Result<(), FileError> {
        self.blocking(|config, state| match state.as_ref() {
            None => Ok(()),
            Some(active) => {
                active.file.sync_all()?;
                sync_dir(&directory_of(&config.path))
            }
        })
        .await
    }
}

impl ActiveFile {
    /// Opens (or creates) the file for appending; a partial last line (a crash mid-write) is
    /// cut off, since its batch was never acknowledged and will be written again.
    /// With `fsync: 'batch'`, the file's name (and any directory created for it) is made
    /// durable too: a machine crash would otherwise lose the whole file, however synced its data.
    fn open(config: &FileConfig) -> std::io::Result<ActiveFile> {
        let durable = config.fsync == FsyncPolicy::Batch;
        let dir = directory_of(&config.path);
        create_dirs(&dir, durable)?;
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&config.path)?;
        if durable {
            sync_dir(&dir)?;
        }
        let len = complete_length(&mut file)?;
        if len != file.metadata()?.len() {
            file.set_len(len)?;
            file.sync_all()?;
        }
        let next_rotation = rotated_files(&config.path)?.last().map_or(1, |(n, _)| n + 1);
        Ok(ActiveFile { file, len, started: Instant::now(), next_rotation })
    }

    fn append(&mut self, buf: &[u8], fsync: FsyncPolicy) -> std::io::Result<()> {
        self.file.write_all(buf)?;
        if fsync == FsyncPolicy::Batch {
            self.file.sync_data()?;
        }
        self.len += buf.len() as u64;
        Ok(())
    }
}

/// The length of the file up to and including its last line break.
fn complete_length(file: &mut File) -> std::io::Result<u64> {
    let mut end = file.metadata()?.len();
    let mut chunk = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let part = &mut chunk[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(part)?;
        if let Some(i) = part.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// The directory a file is in (`.` for a bare name).
fn directory_of(path: &Path) -> PathBuf {
    path.parent().filter(|d| !d.as_os_str().is_empty()).map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Creates `dir` and its missing parents; with `durable`, each new one's name is synced in its parent.
fn create_dirs(dir: &Path, durable: bool) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = directory_of(dir);
    create_dirs(&parent, durable)?;
    match fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    if durable {
        sync_dir(&parent)?;
    }
    Ok(())
}

/// `<path>.<n>` files, oldest first.
fn rotated_files(path: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let dir = directory_of(path);
    let prefix = format!("{}.", path.file_name().and_then(|n| n.to_str()).unwrap_or_default());
    let mut found = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(n) = name.to_str().and_then(|n| n.strip_prefix(&prefix)).and_then(|n| n.parse::<u64>().ok()) else { continue };
        found.push((n, entry.path()));
    }
    found.sort();
    Ok(found)
}

/// Renames the active file to `<path>.<n>` and deletes rotated files beyond `keep_files`; with
/// `fsync: 'batch'`, durably.
fn rotate(config: &FileConfig, n: u64) -> std::io::Result<()> {
    let mut rotated = config.path.clone().into_os_string();
    rotated.push(format!(".{n}"));
    fs::rename(&config.path, &rotated)?;
    let files = rotated_files(&config.path)?;
    for (_, old) in files.iter().take(files.len().saturating_sub(config.keep_files)) {
        fs::remove_file(old)?;
    }
    if config.fsync == FsyncPolicy::Batch {
        sync_dir(&directory_of(&config.path))?;
    }
    Ok(())
}

/// Makes the entries of `dir` (a file created, renamed or deleted in it) durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()?;
    #[cfg(test)]
    tests::DIR_SYNCS.lock().unwrap_or_else(|p| p.into_inner()).push(dir.to_path_buf());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record(n: usize) -> Record {
        Record { namespace: "db.c".into(), index: "c".into(), key: n.to_string(), line: format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(100)).into_bytes() }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let dir = std::env::temp_dir().join(format!("mes-file-{name}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Every directory synced, by any test (each looks for its own).
    pub(super) static DIR_SYNCS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    fn dir_syncs(dir: &Path) -> usize {
        DIR_SYNCS.lock().unwrap().iter().filter(|d| d.as_path() == dir).count()
    }

    fn config(dir: &Path) -> FileConfig {
        FileConfig { path: dir.join("out.ndjson"), rotate_bytes: 1024, rotate_every: None, keep_files: 2, fsync: FsyncPolicy::Batch }
    }

    #[tokio::test]
    async fn files_rotate_by_size_and_keep_the_newest() {
        let dir = temp_dir("rotate");
        let t = FileTransport::new(config(&dir));
        t.open().await.unwrap();
        for batch in 0..10 {
            let records: Vec<Record> = (batch * 5..batch * 5 + 5).map(record).collect();
            t.send(&records, &mut ()).await.unwrap();
        }
        let rotated = rotated_files(&dir.join("out.ndjson")).unwrap();
        // ~575 bytes a batch: every second batch fills a file, so 5 rotations, of which 2 are kept.
        assert_eq!(rotated.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![4, 5], "two kept, numbered in order");
        // The newest rotated file and the active one hold the last lines, in order.
        let mut lines: Vec<u64> = Vec::new();
        for path in [rotated[0].1.clone(), rotated[1].1.clone(), dir.join("out.ndjson")] {
            for line in fs::read_to_string(path).unwrap().lines() {
                lines.push(serde_json::from_str::<serde_json::Value>(line).unwrap()["n"].as_u64().unwrap());
            }
        }
        assert_eq!(lines, (30..50).collect::<Vec<_>>());
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_partial_last_line_is_cut_off_on_open() {
        let dir = temp_dir("partial");
        let path = dir.join("out.ndjson");
        fs::write(&path, "{\"n\":1}\n{\"n\":2}\n{\"n\":").unwrap();
        let t = FileTransport::new(FileConfig { rotate_every: Some(Duration::from_secs(3600)), ..config(&dir) });
        t.open().await.unwrap();
        t.send(&[record(3)], &mut ()).await.unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let ns: Vec<u64> = text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["n"].as_u64().unwrap()).collect();
        assert_eq!(ns, vec![1, 2, 3]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn the_directory_is_synced_after_the_active_file_is_created_or_rotated() {
        let dir = temp_dir("dirsync");
        let t = FileTransport::new(config(&dir));
        t.open().await.unwrap();
        assert_eq!(dir_syncs(&dir), 1, "the new file's name is durable before a batch counts as written");
        // ~575 bytes a batch: the second fills the 1024-byte file, which rotates and starts anew.
        t.send(&(0..5).map(record).collect::<Vec<_>>(), &mut ()).await.unwrap();
        assert_eq!(dir_syncs(&dir), 1);
        t.send(&(5..10).map(record).collect::<Vec<_>>(), &mut ()).await.unwrap();
        assert_eq!(rotated_files(&dir.join("out.ndjson")).unwrap().len(), 1);
        assert!(dir_syncs(&dir) >= 2, "the rename and the new file are durable");
        let before = dir_syncs(&dir);
        t.close().await.unwrap();
        assert_eq!(dir_syncs(&dir), before + 1, "a clean stop leaves the names durable too");
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn directories_the_output_creates_are_durable_in_their_parent() {
        let base = temp_dir("mkdirs");
        let nested = base.join("a").join("b");
        let t = FileTransport::new(FileConfig { path: nested.join("out.ndjson"), ..config(&base) });
        t.open().await.unwrap();
        for dir in [&base, &base.join("a"), &nested] {
            assert!(dir_syncs(dir) >= 1, "{} synced", dir.display());
        }
        fs::remove_dir_all(base).unwrap();
    }
}
