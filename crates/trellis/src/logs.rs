//! Task output: `GET /_trellis/tasks/{id}/logs` answers what a task's containers wrote (one
//! container: as written; several: each line prefixed with `[container]`), and `trellis logs
//! task TASK_ID` prints it. Output lives in the data directory (`tasks/<task-id>/`), node-local
//! as DESIGN.md says.

use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::client::Client;

/// The logs endpoint, reading under `data_dir`.
pub fn router(data_dir: PathBuf) -> axum::Router {
    axum::Router::new().route("/_trellis/tasks/{id}/logs", get(task_logs)).with_state(data_dir)
}

async fn task_logs(State(data_dir): State<PathBuf>, Path(id): Path<String>) -> Response {
    // A task ID is hex; anything else cannot name a directory of ours.
    let id = id.rsplit('/').next().unwrap_or_default().to_owned();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return (StatusCode::BAD_REQUEST, "not a task ID\n").into_response();
    }
    let dir = crate::agent::log_dir(&data_dir, &id);
    let text = tokio::task::spawn_blocking(move || read_logs(&dir)).await.ok().flatten();
    match text {
        Some(text) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no output recorded for task {id} on this node\n")).into_response(),
    }
}

/// The containers' output in `dir`, or `None` if the task ran nothing here.
fn read_logs(dir: &std::path::Path) -> Option<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    if let [only] = files.as_slice() {
        return Some(String::from_utf8_lossy(&std::fs::read(only).ok()?).into_owned());
    }
    let mut out = String::new();
    for f in &files {
        let name = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        for line in String::from_utf8_lossy(&std::fs::read(f).ok()?).lines() {
            out.push_str(&format!("[{name}] {line}\n"));
        }
    }
    Some(out)
}

/// `trellis logs task TASK_ID` (an ID or an ARN): prints the task's output.
pub async fn print(client: &Client, task: &str) -> anyhow::Result<()> {
    let id = task.rsplit('/').next().unwrap_or(task);
    let text = client.text("GET", &format!("/_trellis/tasks/{id}/logs")).await?;
    print!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_containers_are_prefixed() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_logs(&dir.path().join("none")), None);
        std::fs::write(dir.path().join("web.log"), "a\nb\n").unwrap();
        assert_eq!(read_logs(dir.path()).unwrap(), "a\nb\n");
        std::fs::write(dir.path().join("side.log"), "c\n").unwrap();
        assert_eq!(read_logs(dir.path()).unwrap(), "[side] c\n[web] a\n[web] b\n");
    }
}
