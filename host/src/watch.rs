//! Hot deploy: a directory watched with `notify`. Every `*.wasm` in it (at start, and whenever
//! one is created or changed) becomes the next version of the object named by its file stem.
//! Identical bytes are a no-op, so re-saving a file or restarting the station deploys nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use crate::station::{Station, validate_object_id};

/// How long a file's size must stay the same before it is read (a copy may be in progress).
const SETTLE: Duration = Duration::from_millis(150);

/// Keeps the watcher alive; dropping it stops watching.
pub struct DirWatcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DirWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Deploys what is in `dir` now, then watches it.
pub async fn start(station: Station, dir: PathBuf) -> anyhow::Result<DirWatcher> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && (event.kind.is_create() || event.kind.is_modify())
        {
            for path in event.paths {
                let _ = tx.send(path);
            }
        }
    })?;
    watcher.watch(&dir, RecursiveMode::Recursive)?;
    for path in wasm_files(&dir) {
        deploy_file(&station, &path).await;
    }
    tracing::info!(dir = %dir.display(), "watching for *.wasm");
    let task = tokio::spawn(async move {
        while let Some(path) = rx.recv().await {
            // Collect a burst of events, then deploy each changed file once it has settled.
            let mut pending: HashMap<PathBuf, ()> = HashMap::new();
            pending.insert(path, ());
            while let Ok(Some(more)) = tokio::time::timeout(SETTLE, rx.recv()).await {
                pending.insert(more, ());
            }
            for path in pending.into_keys().filter(|p| is_wasm(p)) {
                wait_until_settled(&path).await;
                deploy_file(&station, &path).await;
            }
        }
    });
    Ok(DirWatcher {
        _watcher: watcher,
        task,
    })
}

fn is_wasm(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm")
        && !path.components().any(|c| c.as_os_str() == "target")
}

fn wasm_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && path.file_name().is_some_and(|n| n != "target") {
                stack.push(path);
            } else if is_wasm(&path) {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Waits (bounded) until the file's size stops changing between two looks.
async fn wait_until_settled(path: &Path) {
    let mut last = None;
    for _ in 0..40 {
        let size = tokio::fs::metadata(path).await.ok().map(|m| m.len());
        if size.is_some() && size == last {
            return;
        }
        last = size;
        tokio::time::sleep(SETTLE).await;
    }
}

async fn deploy_file(station: &Station, path: &Path) {
    let Some(id) = path.file_stem().and_then(|s| s.to_str()) else {
        return;
    };
    if let Err(e) = validate_object_id(id) {
        tracing::warn!(file = %path.display(), "not deploying: {e}");
        return;
    }
    let bytes = match tokio::fs::read(path).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(file = %path.display(), "cannot read: {e}");
            return;
        }
    };
    let note = format!("watched file {}", path.display());
    // A watched file keeps the object's mode: a stateless object stays stateless.
    let options = crate::station::DeployOptions {
        stateless: station.serves_stateless(id) == Some(true),
        number_after: 0,
        quota: None,
    };
    match station.deploy(id, bytes, "watch", &note, options).await {
        Ok(outcome) if outcome.unchanged => tracing::debug!(object = id, "unchanged"),
        Ok(outcome) => {
            tracing::info!(object = id, version = outcome.version, file = %path.display(), "hot-deployed")
        }
        // Stations watching one shared folder: the home's own watcher deploys the file.
        Err(crate::station::Error::HomedElsewhere { home, .. }) => tracing::info!(
            object = id,
            home = %home.station,
            file = %path.display(),
            "not deploying a watched file here: the object is homed on {}; its watcher or \
             `host deploy` deploys it there",
            home.station
        ),
        Err(e) => tracing::warn!(object = id, file = %path.display(), "hot deploy refused: {e}"),
    }
}
