//! A server on loopback that speaks the part of the Hugging Face Hub's API tierls uses: a
//! repository's file list (`/api/models/{repo}/tree/main`) and file downloads
//! (`/{repo}/resolve/main/{path}`) with range requests, plus the faults a real hub or
//! network shows: 401 without a token, cut connections, short bodies, a wrong checksum, a
//! slow link. It records every request. For the tests (which never reach the internet) and
//! `tierls bench pull`; nothing else starts it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A file of a repository and how serving it goes wrong.
#[derive(Clone, Default)]
pub struct HubFile {
    pub bytes: Arc<Vec<u8>>,
    /// The first this many download requests send only this many body bytes and close.
    pub cut: Option<(u32, usize)>,
    /// Every response promises the whole length and sends this many bytes fewer.
    pub short_by: Option<usize>,
    /// The listing gives this sha256 instead of the true one.
    pub listed_sha256: Option<String>,
    /// Sleeps this long after every 64 KiB sent (a slow link).
    pub pace: Option<Duration>,
}

impl HubFile {
    pub fn new(bytes: Vec<u8>) -> HubFile {
        HubFile {
            bytes: Arc::new(bytes),
            ..HubFile::default()
        }
    }
}

#[derive(Clone, Default)]
pub struct Repo {
    pub files: BTreeMap<String, HubFile>,
    /// Answers 401 unless the request carries `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
}

pub struct LoopbackHub {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Request>>>,
    /// Body bytes of downloads sent so far.
    pub sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Drop for LoopbackHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread so that it sees the flag and lets the port go.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

impl LoopbackHub {
    pub fn start(repos: BTreeMap<String, Repo>) -> LoopbackHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let repos = Arc::new(Mutex::new(repos));
        {
            let (requests, stop, sent) = (requests.clone(), stop.clone(), sent.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let (repos, requests, sent) = (repos.clone(), requests.clone(), sent.clone());
                    std::thread::spawn(move || serve(stream, &repos, &requests, &sent));
                }
            });
        }
        LoopbackHub {
            url,
            requests,
            sent,
            stop,
        }
    }

    /// The download requests of `file` (a path inside a repository).
    pub fn downloads_of(&self, file: &str) -> Vec<Request> {
        let suffix = format!("/resolve/main/{file}");
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|request| request.path.ends_with(&suffix))
            .cloned()
            .collect()
    }
}

fn serve(
    mut stream: TcpStream,
    repos: &Mutex<BTreeMap<String, Repo>>,
    requests: &Mutex<Vec<Request>>,
    sent: &AtomicU64,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
    let (mut range, mut authorization) = (None, None);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim().to_owned();
            match name.to_ascii_lowercase().as_str() {
                "range" => range = Some(value),
                "authorization" => authorization = Some(value),
                _ => {}
            }
        }
    }
    requests.lock().unwrap().push(Request {
        path: path.clone(),
        range: range.clone(),
        authorization: authorization.clone(),
    });
    let respond = |stream: &mut TcpStream, status: &str, body: &[u8]| {
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(body);
    };
    // `/api/models/{owner}/{name}/tree/main?…` or `/{owner}/{name}/resolve/main/{file}`.
    let (repo_name, rest) = if let Some(rest) = path.strip_prefix("/api/models/") {
        let mut parts = rest.splitn(3, '/');
        let (owner, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        (
            format!("{owner}/{name}"),
            format!("/{}", parts.next().unwrap_or("")),
        )
    } else {
        let mut parts = path.trim_start_matches('/').splitn(3, '/');
        let (owner, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        (
            format!("{owner}/{name}"),
            format!("/{}", parts.next().unwrap_or("")),
        )
    };
    let mut repos = repos.lock().unwrap();
    let Some(repo) = repos.get_mut(&repo_name) else {
        respond(
            &mut stream,
            "404 Not Found",
            b"{\"error\":\"Repository not found\"}",
        );
        return;
    };
    if let Some(token) = &repo.token
        && authorization.as_deref() != Some(&format!("Bearer {token}"))
    {
        respond(
            &mut stream,
            "401 Unauthorized",
            b"{\"error\":\"Invalid credentials\"}",
        );
        return;
    }
    if rest.starts_with("/tree/main") {
        let listing: Vec<serde_json::Value> = repo
            .files
            .iter()
            .map(|(path, file)| {
                let sha = file
                    .listed_sha256
                    .clone()
                    .unwrap_or_else(|| crate::models::hub::sha256_hex(&file.bytes));
                serde_json::json!({
                    "type": "file", "path": path, "size": file.bytes.len(), "oid": "0",
                    "lfs": {"oid": sha, "size": file.bytes.len(), "pointerSize": 134}
                })
            })
            .collect();
        respond(
            &mut stream,
            "200 OK",
            serde_json::to_string(&listing).unwrap().as_bytes(),
        );
        return;
    }
    let Some(file_path) = rest.strip_prefix("/resolve/main/") else {
        respond(&mut stream, "404 Not Found", b"{}");
        return;
    };
    let Some(file) = repo.files.get_mut(file_path) else {
        respond(
            &mut stream,
            "404 Not Found",
            b"{\"error\":\"Entry not found\"}",
        );
        return;
    };
    let mut sent_limit = usize::MAX;
    if let Some((times, bytes)) = &mut file.cut
        && *times > 0
    {
        *times -= 1;
        sent_limit = *bytes;
    }
    let file = file.clone();
    drop(repos);
    let total = file.bytes.len();
    let start = range
        .as_deref()
        .and_then(|range| range.strip_prefix("bytes="))
        .and_then(|range| range.trim_end_matches('-').parse::<usize>().ok());
    let (status, body) = match start {
        Some(start) if start >= total => {
            let head = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\ncontent-range: bytes */{total}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes());
            return;
        }
        Some(start) => ("206 Partial Content", &file.bytes[start..]),
        None => ("200 OK", &file.bytes[..]),
    };
    let offset = start.unwrap_or(0);
    let mut head = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\ncontent-type: application/octet-stream\r\nconnection: close\r\n",
        body.len()
    );
    if start.is_some() {
        head.push_str(&format!(
            "content-range: bytes {offset}-{}/{total}\r\n",
            total - 1
        ));
    }
    head.push_str("\r\n");
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    let mut to_send = body.len().min(sent_limit);
    if let Some(short) = file.short_by {
        to_send = to_send.min(body.len().saturating_sub(short));
    }
    for chunk in body[..to_send].chunks(64 * 1024) {
        if stream.write_all(chunk).is_err() {
            return;
        }
        sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if let Some(pace) = file.pace {
            std::thread::sleep(pace);
        }
    }
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}
