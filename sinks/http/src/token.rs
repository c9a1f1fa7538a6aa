//! A bearer token read from a file and re-read when the file changes (kubelet rotates projected
//! service-account and Knative OIDC tokens in place). The token is never logged.

use reqwest::header::HeaderValue;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// How often the file's modification time is checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);

pub struct TokenFile {
    path: PathBuf,
    state: Mutex<State>,
}

struct State {
    header: HeaderValue,
    modified: Option<SystemTime>,
    checked: Instant,
}

impl TokenFile {
    pub fn open(path: &Path) -> Result<Self, String> {
        let (header, modified) = read(path)?;
        Ok(Self {
            path: path.to_owned(),
            state: Mutex::new(State {
                header,
                modified,
                checked: Instant::now(),
            }),
        })
    }

    /// The `Authorization` header value, re-reading the file if it changed.
    pub fn authorization(&self) -> Result<HeaderValue, String> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.checked.elapsed() >= CHECK_EVERY {
            state.checked = Instant::now();
            let modified = std::fs::metadata(&self.path)
                .and_then(|m| m.modified())
                .ok();
            if modified != state.modified {
                let (header, modified) = read(&self.path)?;
                state.header = header;
                state.modified = modified;
            }
        }
        Ok(state.header.clone())
    }
}

fn read(path: &Path) -> Result<(HeaderValue, Option<SystemTime>), String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("token_file {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("token_file {}: empty", path.display()));
    }
    let mut header = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| format!("token_file {}: not a valid token", path.display()))?;
    header.set_sensitive(true);
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Ok((header, modified))
}
