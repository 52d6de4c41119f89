//! What the benchmarks share: the standalone test server (`s3meta-test-server`) as a child
//! process, and its admin endpoint.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The standalone test server, killed when dropped.
pub struct Server {
    child: Child,
    pub endpoint: String,
}

impl Server {
    /// Starts `bin` with `objects` objects in `bucket` and `latency_ms` per request; returns
    /// once it has said where it listens.
    pub fn start(
        bin: &Path,
        objects: usize,
        latency_ms: u64,
        bucket: &str,
    ) -> Result<Server, String> {
        let mut child = Command::new(bin)
            .args(["--objects", &objects.to_string()])
            .args(["--latency-ms", &latency_ms.to_string()])
            .args(["--bucket", bucket])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("test server: {e}"))?;
        let endpoint = line
            .trim()
            .strip_prefix("endpoint=")
            .ok_or_else(|| format!("test server said {line:?}, not endpoint=URL"))?
            .to_string();
        Ok(Server { child, endpoint })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One unsigned HTTP/1.1 request to the server's admin endpoint; returns the body.
pub fn admin(endpoint: &str, method: &str, path: &str) -> Result<String, String> {
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let fail = |e: std::io::Error| format!("{method} {endpoint}{path}: {e}");
    let mut sock = TcpStream::connect(host).map_err(fail)?;
    write!(
        sock,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(fail)?;
    let mut resp = String::new();
    sock.read_to_string(&mut resp).map_err(fail)?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    if !head.starts_with("HTTP/1.1 2") {
        return Err(format!("{method} {path}: {head}"));
    }
    Ok(body.to_string())
}
