//! The resident memory of a node that runs on this machine: the process listening on the
//! node's loopback port, found through Linux's `/proc`. Inference servers report no memory
//! figure of their own (llama-server's `/metrics` and `/props` have none), and the prompt
//! cache in host memory is what grows; a node on another machine shows none.

use std::path::Path;

/// `/proc/net/tcp*` of a busy machine is a few hundred KiB; more is not believed.
const MAX_TABLE_BYTES: u64 = 8 * 1024 * 1024;
/// The most processes looked through for the socket.
const MAX_PROCESSES: usize = 4096;
/// The most open files of one process looked through.
const MAX_FILES: usize = 4096;

/// The resident bytes of the process listening on `url`'s port, when `url` is a loopback
/// address and this is Linux; `known_pid` is tried first (the process found last time).
/// Returns the process id too, so the caller can try it first next time.
pub fn resident_memory(url: &str, known_pid: Option<u32>) -> Option<(u32, u64)> {
    let port = loopback_port(url)?;
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return None;
    }
    let owns = |pid: u32| process_holds_socket(pid, &inodes);
    let pid = known_pid.filter(|&pid| owns(pid)).or_else(|| {
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .take(MAX_PROCESSES)
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .find(|&pid| owns(pid))
    })?;
    Some((pid, resident_bytes(pid)?))
}

/// The port of an `http://127.0.0.1:PORT`, `http://localhost:PORT` or `http://[::1]:PORT` URL.
fn loopback_port(url: &str) -> Option<u16> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    let loopback = matches!(host, "localhost" | "[::1]") || host.starts_with("127.");
    loopback.then(|| port.parse().ok()).flatten()
}

/// The socket inodes listening on `port`, from `/proc/net/tcp` and `/proc/net/tcp6`.
fn listening_inodes(port: u16) -> Vec<u64> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Some(text) = read_small(Path::new(table)) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEX_IP:HEX_PORT; state 0A is LISTEN; the inode is field 9.
            let listens = fields.get(3) == Some(&"0A");
            let on_port = fields
                .get(1)
                .and_then(|address| address.rsplit_once(':'))
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok())
                == Some(port);
            if listens
                && on_port
                && let Some(inode) = fields.get(9).and_then(|inode| inode.parse().ok())
            {
                inodes.push(inode);
            }
        }
    }
    inodes
}

fn process_holds_socket(pid: u32, inodes: &[u64]) -> bool {
    let Ok(files) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    files.flatten().take(MAX_FILES).any(|file| {
        std::fs::read_link(file.path()).is_ok_and(|target| {
            target
                .to_str()
                .and_then(|target| target.strip_prefix("socket:["))
                .and_then(|inode| inode.strip_suffix(']'))
                .and_then(|inode| inode.parse::<u64>().ok())
                .is_some_and(|inode| inodes.contains(&inode))
        })
    })
}

/// `VmRSS` of `/proc/PID/status`, in bytes.
pub(crate) fn resident_bytes(pid: u32) -> Option<u64> {
    let status = read_small(Path::new(&format!("/proc/{pid}/status")))?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A `/proc` file's text, read to at most [`MAX_TABLE_BYTES`] (they report a size of 0).
fn read_small(path: &Path) -> Option<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    file.take(MAX_TABLE_BYTES).read_to_string(&mut text).ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_have_a_port_to_look_up() {
        let cases = [
            ("http://127.0.0.1:8080", Some(8080)),
            ("http://localhost:11434/", Some(11434)),
            ("http://[::1]:9000/v1", Some(9000)),
            ("http://192.168.1.20:8080", None),
            ("http://gpu-box:8080", None),
            ("http://127.0.0.1", None),
            ("ftp://127.0.0.1:21", None),
        ];
        for (url, port) in cases {
            assert_eq!(loopback_port(url), port, "{url}");
        }
    }
}
