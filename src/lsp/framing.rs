//! LSP base-protocol framing: `Content-Length` headers around JSON bodies.
//!
//! The reader survives anything: a broken header block is reported and skipped up to the
//! next `Content-Length`, an oversized body is drained unread, and only end of input ends it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Longest header line we accept; real headers are a few dozen bytes.
const MAX_HEADER_LINE: usize = 8 * 1024;
const CONTENT_LENGTH: &[u8] = b"content-length";

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a header block without Content-Length")]
    MissingContentLength,
    #[error("an invalid Content-Length header: {0:?}")]
    BadContentLength(String),
    #[error("an unsupported Content-Type: {0:?} (only utf-8 is supported)")]
    BadContentType(String),
    #[error("skipped {0} bytes that are not an LSP header")]
    Garbage(usize),
    #[error("a message of {size} bytes is over the limit of {limit} bytes (limits.max_message_mb)")]
    TooLarge { size: usize, limit: usize },
}

pub struct FrameReader<R> {
    reader: BufReader<R>,
    max_body: Arc<AtomicUsize>,
    /// Header bytes found inside a garbage line, to be parsed before reading more.
    pending_line: Option<Vec<u8>>,
    /// Set after an error until the next good frame: the garbage that follows a broken
    /// frame (its body, for one) belongs to the same incident and is skipped silently.
    recovering: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// `max_body` is shared so that a configuration change applies to the next message.
    pub fn new(reader: R, max_body: Arc<AtomicUsize>) -> Self {
        FrameReader {
            reader: BufReader::new(reader),
            max_body,
            pending_line: None,
            recovering: false,
        }
    }

    /// The next frame's body, a framing error to report, or `None` at end of input.
    pub async fn next(&mut self) -> std::io::Result<Option<Result<Vec<u8>, FrameError>>> {
        loop {
            let frame = self.next_frame().await?;
            match &frame {
                Some(Ok(_)) => self.recovering = false,
                Some(Err(FrameError::Garbage(_))) if self.recovering => continue,
                Some(Err(_)) => self.recovering = true,
                None => {}
            }
            return Ok(frame);
        }
    }

    async fn next_frame(&mut self) -> std::io::Result<Option<Result<Vec<u8>, FrameError>>> {
        let mut content_length: Option<Result<usize, FrameError>> = None;
        let mut content_type_error = None;
        let mut seen_header = false;
        loop {
            let line = match self.pending_line.take() {
                Some(line) => line,
                None => match self.read_line().await? {
                    Some(line) => line,
                    None => return Ok(None),
                },
            };
            let trimmed = trim_line_end(&line);
            if trimmed.is_empty() {
                if !seen_header {
                    continue; // Blank lines between messages are harmless.
                }
                break;
            }
            match parse_header(trimmed) {
                Some((name, value)) => {
                    seen_header = true;
                    if name.eq_ignore_ascii_case("content-length") {
                        content_length = Some(
                            value
                                .parse::<usize>()
                                .map_err(|_| FrameError::BadContentLength(value.to_owned())),
                        );
                    } else if name.eq_ignore_ascii_case("content-type") && !is_utf8_type(value) {
                        content_type_error = Some(FrameError::BadContentType(value.to_owned()));
                    }
                }
                None => {
                    // Resynchronise on the next header hidden in the garbage, if any.
                    let lower = line.to_ascii_lowercase();
                    let resume = find(&lower, CONTENT_LENGTH).filter(|&at| at > 0);
                    if let Some(at) = resume {
                        self.pending_line = Some(line[at..].to_vec());
                    }
                    return Ok(Some(Err(FrameError::Garbage(resume.unwrap_or(line.len())))));
                }
            }
        }
        let length = match content_length {
            None => return Ok(Some(Err(FrameError::MissingContentLength))),
            Some(Err(err)) => return Ok(Some(Err(err))),
            Some(Ok(length)) => length,
        };
        let limit = self.max_body.load(Ordering::Relaxed);
        if length > limit {
            let mut skipped = (&mut self.reader).take(length as u64);
            tokio::io::copy(&mut skipped, &mut tokio::io::sink()).await?;
            return Ok(Some(Err(FrameError::TooLarge {
                size: length,
                limit,
            })));
        }
        let mut body = vec![0; length];
        match self.reader.read_exact(&mut body).await {
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(err) => return Err(err),
        }
        if let Some(err) = content_type_error {
            return Ok(Some(Err(err)));
        }
        Ok(Some(Ok(body)))
    }

    /// One line up to `\n`, cut at [`MAX_HEADER_LINE`] bytes (the rest of an overlong line
    /// comes back as the next line, which is garbage and reported as such).
    async fn read_line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut line = Vec::new();
        let mut limited = (&mut self.reader).take(MAX_HEADER_LINE as u64);
        let read = limited.read_until(b'\n', &mut line).await?;
        Ok((read > 0).then_some(line))
    }
}

/// Writes one framed message.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    body: &[u8],
) -> std::io::Result<()> {
    let header = format!("Content-Length: {}\r\n\r\n", body.len());
    writer.write_all(header.as_bytes()).await?;
    writer.write_all(body).await?;
    writer.flush().await
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn parse_header(line: &[u8]) -> Option<(&str, &str)> {
    let line = std::str::from_utf8(line).ok()?;
    let (name, value) = line.split_once(':')?;
    let is_token = !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-');
    is_token.then(|| (name, value.trim()))
}

fn is_utf8_type(value: &str) -> bool {
    value
        .split(';')
        .skip(1)
        .map(str::trim)
        .all(|param| match param.split_once('=') {
            Some((key, charset)) if key.trim().eq_ignore_ascii_case("charset") => {
                let charset = charset.trim().trim_matches('"');
                charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("utf8")
            }
            _ => true,
        })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
