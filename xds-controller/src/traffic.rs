//! `aigw run --traffic`: what the gateway is doing, for the person at the
//! terminal. Reads the JSON-lines access log Envoy writes and prints one line
//! per request, or a summary every few seconds.

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TrafficMode {
    /// One line per request.
    #[default]
    Lines,
    /// Totals every 10 seconds, when there was traffic.
    Summary,
    /// Nothing.
    Quiet,
}

fn text(entry: &Value, key: &str) -> Option<String> {
    match entry.get(key)? {
        Value::String(s) if !s.is_empty() && s != "-" => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn number(entry: &Value, key: &str) -> u64 {
    text(entry, key).and_then(|t| t.parse().ok()).unwrap_or(0)
}

/// `12:03:44 200 chat test-model -> default/backend in 11 out 7 tokens 35 ms`
pub fn format_line(entry: &Value) -> String {
    let time = text(entry, "start_time")
        .and_then(|t| t.get(11..19).map(str::to_string))
        .unwrap_or_else(|| "--:--:--".into());
    let status = text(entry, "status").unwrap_or_else(|| "-".into());
    let path = text(entry, "path").unwrap_or_default();
    let path = path.split('?').next().unwrap_or("");
    let model = text(entry, "request_model").unwrap_or_else(|| "-".into());
    let mut line = format!("{time} {status} {path} {model}");
    if let Some(backend) = text(entry, "backend") {
        line.push_str(" -> ");
        line.push_str(&backend);
        if let Some(m) = text(entry, "response_model").filter(|m| *m != model) {
            line.push_str(&format!(" ({m})"));
        }
    }
    if text(entry, "total_tokens").is_some() {
        line.push_str(&format!(
            " tokens in {} out {}",
            number(entry, "input_tokens"),
            number(entry, "output_tokens")
        ));
    }
    line.push_str(&format!(" {} ms", number(entry, "duration_ms")));
    if let Some(ttft) = text(entry, "time_to_first_token_ms") {
        line.push_str(&format!(" (first token {ttft} ms)"));
    }
    if let Some(flags) = text(entry, "response_flags") {
        line.push_str(&format!(" [{flags}]"));
    }
    line
}

/// Totals between two summaries.
#[derive(Debug, Default)]
pub struct Summary {
    requests: u64,
    failed: u64,
    input: u64,
    output: u64,
    duration_ms: u64,
    by_model: BTreeMap<String, u64>,
}

impl Summary {
    pub fn add(&mut self, entry: &Value) {
        self.requests += 1;
        if number(entry, "status") >= 400 || number(entry, "status") == 0 {
            self.failed += 1;
        }
        self.input += number(entry, "input_tokens");
        self.output += number(entry, "output_tokens");
        self.duration_ms += number(entry, "duration_ms");
        let model = text(entry, "request_model").unwrap_or_else(|| "-".into());
        *self.by_model.entry(model).or_default() += 1;
    }

    /// The summary line, and resets; None when there was no traffic.
    pub fn take(&mut self, seconds: u64) -> Option<String> {
        if self.requests == 0 {
            return None;
        }
        let models: Vec<String> = self
            .by_model
            .iter()
            .map(|(m, n)| format!("{m} {n}"))
            .collect();
        let line = format!(
            "last {seconds}s: {} requests ({} failed), tokens in {} out {}, mean {} ms; {}",
            self.requests,
            self.failed,
            self.input,
            self.output,
            self.duration_ms / self.requests,
            models.join(", ")
        );
        *self = Summary::default();
        Some(line)
    }
}

/// Follows a growing file from its current end, line by line.
pub struct Tail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl Tail {
    pub fn from_end(path: &Path) -> Self {
        let offset = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        Tail {
            path: path.to_path_buf(),
            offset,
            partial: Vec::new(),
        }
    }

    /// Complete lines written since the last call.
    pub fn lines(&mut self) -> Vec<String> {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            // Truncated or replaced: start over.
            self.offset = 0;
            self.partial.clear();
        }
        if len == self.offset || file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        if file.read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        String::from_utf8_lossy(&complete)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    }
}

const SUMMARY_SECONDS: u64 = 10;

/// Prints the traffic in `path` as it is logged, until the task is dropped.
pub async fn follow(path: PathBuf, mode: TrafficMode) {
    if mode == TrafficMode::Quiet {
        return;
    }
    let mut tail = Tail::from_end(&path);
    let mut summary = Summary::default();
    let mut poll = tokio::time::interval(Duration::from_millis(250));
    let mut report = tokio::time::interval(Duration::from_secs(SUMMARY_SECONDS));
    report.tick().await;
    loop {
        tokio::select! {
            _ = poll.tick() => {
                for line in tail.lines() {
                    let Ok(entry) = serde_json::from_str::<Value>(&line) else { continue };
                    match mode {
                        TrafficMode::Lines => println!("{}", format_line(&entry)),
                        _ => summary.add(&entry),
                    }
                }
            }
            _ = report.tick(), if mode == TrafficMode::Summary => {
                if let Some(line) = summary.take(SUMMARY_SECONDS) {
                    println!("aigw: {line}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry() -> Value {
        json!({
            "start_time": "2026-11-24T20:51:03.123Z", "status": 200, "path": "/v1/chat/completions",
            "request_model": "test-model", "backend": "default/backend",
            "response_model": "test-model-2024", "input_tokens": "11", "output_tokens": "7",
            "total_tokens": "18", "duration_ms": 35, "time_to_first_token_ms": "12",
            "response_flags": "-",
        })
    }

    #[test]
    fn one_line_per_request() {
        assert_eq!(
            format_line(&entry()),
            "20:51:03 200 /v1/chat/completions test-model -> default/backend (test-model-2024) tokens in 11 out 7 35 ms (first token 12 ms)"
        );
        let failed = json!({"start_time": "2026-11-24T20:51:04.000Z", "status": 404,
            "path": "/v1/chat/completions", "request_model": null, "backend": null,
            "input_tokens": null, "duration_ms": 1, "response_flags": "-"});
        assert_eq!(
            format_line(&failed),
            "20:51:04 404 /v1/chat/completions - 1 ms"
        );
    }

    #[test]
    fn summary_totals_and_resets() {
        let mut s = Summary::default();
        assert_eq!(s.take(10), None);
        s.add(&entry());
        s.add(&json!({"status": 500, "request_model": "other", "duration_ms": 5}));
        assert_eq!(
            s.take(10).unwrap(),
            "last 10s: 2 requests (1 failed), tokens in 11 out 7, mean 20 ms; other 1, test-model 1"
        );
        assert_eq!(s.take(10), None);
    }

    #[test]
    fn tail_reads_complete_new_lines() {
        let dir = std::env::temp_dir().join(format!("aigw-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        std::fs::write(&path, "old\n").unwrap();
        let mut tail = Tail::from_end(&path);
        assert!(tail.lines().is_empty());
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"one\ntw").unwrap();
        assert_eq!(tail.lines(), ["one"]);
        f.write_all(b"o\n").unwrap();
        assert_eq!(tail.lines(), ["two"]);
        std::fs::write(&path, "new\n").unwrap();
        assert_eq!(tail.lines(), ["new"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
