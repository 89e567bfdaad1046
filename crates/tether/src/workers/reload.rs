//! New versions of the app without stopping: a reload starts a new generation of every
//! worker slot from the app files as they are now, one slot after another, and stops at the
//! first that fails (the old generation keeps serving). `--dev` reloads on every save.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};

use super::Command;

/// Asks every slot's supervisor for a new generation, one reload at a time.
pub struct Reloader {
    /// Each slot's supervisor, in slot order.
    commands: Vec<mpsc::Sender<Command>>,
    /// One reload at a time: a second waits for the first.
    one: tokio::sync::Mutex<()>,
    /// Why the newest reload failed, until one succeeds; shown in `--dev` pages.
    failed: watch::Sender<Option<String>>,
    /// Reloads that started a new generation everywhere.
    ok: AtomicU64,
    /// Reloads that stopped at a slot whose new generation did not start.
    refused: AtomicU64,
    /// Longest one slot may take to answer: its start-up timeout, with room for a restart in
    /// progress, which it finishes first.
    answer_within: Duration,
}

impl Reloader {
    /// A reloader over these supervisors, whose workers start within `start_timeout`.
    pub fn new(commands: Vec<mpsc::Sender<Command>>, start_timeout: Duration) -> Reloader {
        Reloader {
            answer_within: start_timeout * 2 + Duration::from_secs(30),
            commands,
            one: tokio::sync::Mutex::new(()),
            failed: watch::Sender::new(None),
            ok: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Starts a new generation on every slot; the old ones drain for at most `drain`. On
    /// failure, the slots not yet reloaded keep their generation and the answer says why, as a
    /// sentence for the operator.
    pub async fn reload(&self, drain: Duration) -> Result<(), String> {
        let _one = self.one.lock().await;
        tracing::info!(?drain, "reloading the app: starting new workers");
        for (slot, commands) in self.commands.iter().enumerate() {
            let (done, answer) = oneshot::channel();
            let sent = commands.send(Command::Reload { drain, done }).await;
            let result = match sent {
                Ok(()) => match tokio::time::timeout(self.answer_within, answer).await {
                    Ok(answer) => {
                        answer.unwrap_or_else(|_| Err("the worker's supervisor stopped".into()))
                    }
                    Err(_) => Err(format!(
                        "worker {slot} is still restarting after a crash, and did not start the \
                         new version within {:?}",
                        self.answer_within
                    )),
                },
                Err(_) => Err("the gateway is shutting down".into()),
            };
            if let Err(why) = result {
                let sentence = format!(
                    "the app's new version did not start ({why}); the old one keeps serving until \
                     you fix the app and reload again"
                );
                tracing::error!(worker = slot, "{sentence}");
                self.refused.fetch_add(1, Ordering::Relaxed);
                self.failed.send_replace(Some(why));
                return Err(sentence);
            }
        }
        self.ok.fetch_add(1, Ordering::Relaxed);
        self.failed.send_replace(None);
        tracing::info!("reload done: new pages get the new version");
        Ok(())
    }

    /// Why the newest reload failed, while no later one succeeded.
    pub fn failure(&self) -> Option<String> {
        self.failed.borrow().clone()
    }

    /// Sees every change of [`Reloader::failure`].
    pub fn failures(&self) -> watch::Receiver<Option<String>> {
        self.failed.subscribe()
    }

    /// (reloads done, reloads refused) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}

/// How often `--dev` looks at the app files.
const POLL: Duration = Duration::from_millis(300);
/// Most files `--dev` watches under one directory app.
const MAX_WATCHED: usize = 5_000;

/// What a file looked like: its modification time and length.
type Stamp = (PathBuf, Option<SystemTime>, u64);

/// `--dev`: reloads, with no drain, whenever an app file (or any file of a directory app,
/// but its hidden and `__pycache__` directories) changes; until `stop`.
pub async fn watch_files(
    apps: Vec<PathBuf>,
    reloader: std::sync::Arc<Reloader>,
    mut stop: watch::Receiver<bool>,
) {
    let mut seen = stamps(&apps);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = stamps(&apps);
        if now == seen {
            continue;
        }
        // An editor may write in steps: wait until the files hold still.
        let mut settled = now;
        loop {
            tokio::time::sleep(POLL).await;
            let again = stamps(&apps);
            if again == settled {
                break;
            }
            settled = again;
        }
        seen = settled;
        tracing::info!("app files changed; reloading (--dev)");
        // A failure is logged and shown in the pages; the next save tries again.
        let _ = reloader.reload(Duration::ZERO).await;
    }
}

/// Every watched file's stamp, sorted.
fn stamps(apps: &[PathBuf]) -> Vec<Stamp> {
    let mut out = Vec::new();
    for app in apps {
        if app.is_dir() {
            walk(app, &mut out);
        } else {
            out.push(stamp(app));
        }
    }
    out.sort();
    out
}

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok();
    (
        path.to_owned(),
        meta.as_ref().and_then(|m| m.modified().ok()),
        meta.map_or(0, |m| m.len()),
    )
}

/// The files under `dir`, depth first, at most [`MAX_WATCHED`].
fn walk(dir: &Path, out: &mut Vec<Stamp>) {
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            if out.len() >= MAX_WATCHED {
                return;
            }
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name == "__pycache__" {
                continue;
            }
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(_) => out.push(stamp(&path)),
                Err(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_app_is_watched_but_not_its_caches() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app");
        std::fs::create_dir_all(app.join("__pycache__")).unwrap();
        std::fs::create_dir_all(app.join("templates")).unwrap();
        std::fs::write(app.join("main.py"), "x = 1").unwrap();
        std::fs::write(app.join("templates/page.html"), "<p>").unwrap();
        std::fs::write(app.join("__pycache__/main.pyc"), "junk").unwrap();
        std::fs::write(app.join(".hidden"), "x").unwrap();
        let script = dir.path().join("other.py");
        std::fs::write(&script, "y = 2").unwrap();
        let watched: Vec<PathBuf> = stamps(&[app.clone(), script.clone()])
            .into_iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(
            watched,
            vec![
                app.join("main.py"),
                app.join("templates/page.html"),
                script.clone()
            ]
        );
        let before = stamps(std::slice::from_ref(&script));
        std::fs::write(&script, "y = 20").unwrap();
        assert_ne!(stamps(&[script]), before, "a longer file is a change");
    }
}
