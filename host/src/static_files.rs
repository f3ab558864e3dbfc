//! Static files: the directory named by routes.toml's `static-dir`, served to plain HTTP
//! requests that are not WebSocket upgrades (a page and its scripts, served from the
//! same origin as the WebSocket routes they open).
//!
//! Which requests come here ([`wants`]): only with a `static-dir`, only requests without
//! `Upgrade: websocket`, and only for paths that no route's `match` accepts, so a route
//! path keeps its WebSocket answers (`426`, `405`) and routes shadow files. Without a
//! `static-dir` nothing changes.
//!
//! What is served: `GET` and `HEAD` (others: `405` with `Allow: GET, HEAD`) of regular
//! files under the directory. A directory path ending in `/` serves its `index.html`; one
//! without the slash is redirected (`301`) to the slash form, so relative links in the
//! page resolve against the directory. Never a listing: a directory without
//! `index.html` is `404`. Hidden names (any segment starting with `.`: `.git`, `.env`;
//! in the request, or in the target of a symlink) are `404`, as is anything that
//! resolves outside the directory: `..` (already resolved by
//! `handshake::normalize_path`, refused here again) and
//! symlinks whose target is outside (the canonical path must stay under the canonical
//! directory; symlinks inside it are followed). Encoded slashes never get here (`400`
//! when the request is read). Only regular files are opened (a FIFO would block).
//!
//! Responses carry `Content-Type` (by extension, `mime_guess`; text with
//! `charset=utf-8`), `Content-Length`, an `ETag` (size and modification time),
//! `Last-Modified`, `Cache-Control: no-cache` (browsers revalidate, so a changed page is
//! seen at once and an unchanged one costs a `304`), `X-Content-Type-Options: nosniff`
//! and `Connection: close`. `If-None-Match` (which wins when both are sent) and
//! `If-Modified-Since` answer `304`. One request per connection, like an upgrade: the
//! connection closes after the answer. Files are streamed in 64 KiB pieces, so a
//! response holds that much memory whatever the file's size (there is no size cap); a
//! client that takes nothing for `handshake-timeout-ms` is dropped. The socket keeps its
//! place in `max-connections` until then.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use http::header::{ALLOW, HeaderName};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::Route;
use crate::handshake;
use crate::request::{Rejection, Request};
use crate::routing::{self, NoRoute};

/// How much of a file is read and written at a time.
const CHUNK_BYTES: usize = 64 * 1024;

/// Whether `request` is for the static-file handler (see the module docs): not an
/// upgrade, and for a path no route matches.
pub fn wants(request: &Request, routes: &[Route]) -> bool {
    !request.has_token("upgrade", "websocket")
        && routing::select(routes, &request.path, &[]) == Err(NoRoute::Path)
}

/// What a request resolved to.
#[derive(Debug)]
enum Answer {
    /// A file to send (or, for `HEAD` and `304`, whose headers to send).
    File {
        path: PathBuf,
        file: tokio::fs::File,
        len: u64,
        modified: SystemTime,
    },
    /// `301` to this location.
    Redirect(String),
}

/// Answers `request` from the directory `root` (canonical, as the config keeps it) and
/// closes the write side. `write_timeout` bounds each write: a client that reads
/// nothing for that long is dropped.
pub async fn serve<S: AsyncWrite + Unpin>(
    stream: &mut S,
    request: &Request,
    root: &Path,
    write_timeout: Duration,
) {
    let answer = match resolve(request, root).await {
        Ok(answer) => answer,
        Err(rejection) => {
            tracing::info!(status = rejection.status, reason = %rejection.body, "static: refused");
            let rejection = rejection.with_header(NOSNIFF.0, HeaderValue::from_static(NOSNIFF.1));
            let _ =
                tokio::time::timeout(write_timeout, handshake::reject(stream, &rejection)).await;
            return;
        }
    };
    if let Err(error) = send(stream, request, answer, write_timeout).await {
        tracing::info!(%error, "static: response cut short");
    }
    let _ = tokio::time::timeout(write_timeout, stream.shutdown()).await;
}

const NOSNIFF: (HeaderName, &str) = (HeaderName::from_static("x-content-type-options"), "nosniff");

/// Checks the method and maps the path onto a file under `root`.
async fn resolve(request: &Request, root: &Path) -> Result<Answer, Rejection> {
    if !matches!(request.method.as_str(), "GET" | "HEAD") {
        return Err(Rejection::new(
            405,
            format!(
                "method `{}` not allowed; static files are read with GET or HEAD",
                request.method
            ),
        )
        .with_header(ALLOW, HeaderValue::from_static("GET, HEAD")));
    }
    if request.header_count("host") > 1
        || (request.minor_version >= 1 && request.header("host").is_none())
    {
        return Err(Rejection::new(
            400,
            "a request needs exactly one `Host` header",
        ));
    }
    let not_found = || Rejection::new(404, format!("no file at `{}`", request.path));
    let relative = relative_path(&request.path).ok_or_else(not_found)?;
    let canonical = inside(root, &root.join(&relative))
        .await
        .ok_or_else(not_found)?;
    let meta = tokio::fs::metadata(&canonical)
        .await
        .map_err(|_| not_found())?;
    let path = if meta.is_dir() {
        if !request.path.ends_with('/') {
            let mut location = format!("{}/", request.path);
            if !request.query.is_empty() {
                location.push('?');
                location.push_str(&request.query);
            }
            return Ok(Answer::Redirect(location));
        }
        inside(root, &canonical.join("index.html"))
            .await
            .ok_or_else(not_found)?
    } else if request.path.ends_with('/') {
        // `file/`: a file is not a directory.
        return Err(not_found());
    } else {
        canonical
    };
    // Only regular files: opening a FIFO would wait for a writer.
    if !tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file()) {
        return Err(not_found());
    }
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| not_found())?;
    // The open file's own metadata: what is sent is what was measured.
    let meta = file.metadata().await.map_err(|_| not_found())?;
    if !meta.is_file() {
        return Err(not_found());
    }
    Ok(Answer::File {
        path,
        file,
        len: meta.len(),
        modified: meta.modified().unwrap_or(UNIX_EPOCH),
    })
}

/// The file-system path below the root that a normalised request path names, or `None`
/// for a path that must not be served: a hidden or dot segment, a NUL, or bytes that
/// are not UTF-8 once percent-decoded.
fn relative_path(path: &str) -> Option<PathBuf> {
    let mut relative = PathBuf::new();
    for segment in path.split('/').skip(1).filter(|s| !s.is_empty()) {
        let decoded = percent_decode(segment)?;
        if decoded.starts_with('.') || decoded.contains(['\0', '/', '\\']) {
            return None;
        }
        relative.push(decoded);
    }
    Some(relative)
}

/// Decodes `%XX` escapes; `None` for a stray `%` or a result that is not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
            let (hi, lo) = (hex(bytes.get(i + 1))?, hex(bytes.get(i + 2))?);
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `path` with every symlink resolved, if it exists, stays under `root` (canonical) and
/// is not hidden there (a symlink to `.git/config` is as hidden as its target).
async fn inside(root: &Path, path: &Path) -> Option<PathBuf> {
    let canonical = tokio::fs::canonicalize(path).await.ok()?;
    let below = canonical.strip_prefix(root).ok()?;
    let hidden = below
        .components()
        .any(|c| c.as_os_str().as_encoded_bytes().starts_with(b"."));
    (!hidden).then_some(canonical)
}

/// The entity tag of a file version: its size and modification time, which change
/// whenever an editor or a build writes it.
fn etag(len: u64, modified: SystemTime) -> String {
    let nanos = modified
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("\"{len:x}-{nanos:x}\"")
}

/// Whether the client's copy is current: `If-None-Match` lists the tag (weak comparison,
/// or `*`), or, without `If-None-Match`, `If-Modified-Since` is not before the file's
/// modification time (in whole seconds, the resolution of HTTP dates).
fn not_modified(request: &Request, etag: &str, modified: SystemTime) -> bool {
    if request.header("if-none-match").is_some() {
        return request
            .header_items("if-none-match")
            .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag);
    }
    let Some(since) = request
        .header("if-modified-since")
        .and_then(|v| httpdate::parse_http_date(v.trim()).ok())
    else {
        return false;
    };
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    secs(modified) <= secs(since)
}

/// The `Content-Type` for `path`: by extension, text in UTF-8.
fn content_type(path: &Path) -> String {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let text = mime.type_() == mime_guess::mime::TEXT
        || matches!(mime.subtype().as_str(), "javascript" | "json");
    if text && mime.get_param("charset").is_none() {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    }
}

/// Writes the answer: the head, then (for a `200` to a `GET`) the file in pieces.
async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    request: &Request,
    answer: Answer,
    write_timeout: Duration,
) -> std::io::Result<()> {
    let common = "X-Content-Type-Options: nosniff\r\nConnection: close\r\n";
    let (path, mut file, len, modified) = match answer {
        Answer::Redirect(location) => {
            // The path is normalised (it starts with exactly one `/`, so the location
            // cannot name another host); a character a header may not hold ends it here.
            HeaderValue::from_str(&location).map_err(std::io::Error::other)?;
            tracing::info!(status = 301, "static");
            let head = format!(
                "HTTP/1.1 301 Moved Permanently\r\nLocation: {location}\r\nContent-Length: 0\r\n{common}\r\n"
            );
            return write(stream, head.as_bytes(), write_timeout).await;
        }
        Answer::File {
            path,
            file,
            len,
            modified,
        } => (path, file, len, modified),
    };
    let tag = etag(len, modified);
    let validators = format!(
        "ETag: {tag}\r\nLast-Modified: {}\r\nCache-Control: no-cache\r\n",
        httpdate::fmt_http_date(modified)
    );
    if not_modified(request, &tag, modified) {
        tracing::info!(status = 304, "static");
        let head = format!("HTTP/1.1 304 Not Modified\r\n{validators}{common}\r\n");
        return write(stream, head.as_bytes(), write_timeout).await;
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {len}\r\n{validators}{common}\r\n",
        content_type(&path)
    );
    write(stream, head.as_bytes(), write_timeout).await?;
    if request.method == "HEAD" {
        tracing::info!(status = 200, bytes = 0, "static");
        return Ok(());
    }
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left).map_or(CHUNK_BYTES, |l| l.min(CHUNK_BYTES));
        let n = file.read(&mut buf[..want]).await?;
        if n == 0 {
            // The file shrank since it was measured: the client sees a short body.
            return Err(std::io::Error::other("the file shrank while it was sent"));
        }
        write(stream, &buf[..n], write_timeout).await?;
        left -= n as u64;
    }
    tracing::info!(status = 200, bytes = len, "static");
    Ok(())
}

/// Writes all of `bytes`, giving up after `timeout` without completion.
async fn write<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    timeout: Duration,
) -> std::io::Result<()> {
    tokio::time::timeout(timeout, stream.write_all(bytes))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "the client stopped reading")
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_below_the_root_or_not_at_all() {
        assert_eq!(relative_path("/"), Some(PathBuf::new()));
        assert_eq!(relative_path("/a/b.js"), Some(PathBuf::from("a/b.js")));
        assert_eq!(relative_path("/a%20b/"), Some(PathBuf::from("a b")));
        for refused in [
            "/.env",
            "/a/.git/config",
            "/..",
            "/a/../b",
            "/%2E%2E/x",
            "/%00",
            "/%",
        ] {
            assert_eq!(relative_path(refused), None, "{refused}");
        }
    }

    #[test]
    fn conditional_requests() {
        let modified = UNIX_EPOCH + Duration::from_millis(1_700_000_000_500);
        let tag = etag(10, modified);
        let date = httpdate::fmt_http_date(modified);
        assert!(not_modified(
            &Request::get(&[("if-none-match", &tag)]),
            &tag,
            modified
        ));
        let weak_list = format!("\"x\", W/{tag}");
        assert!(not_modified(
            &Request::get(&[("if-none-match", &weak_list)]),
            &tag,
            modified
        ));
        assert!(not_modified(
            &Request::get(&[("if-none-match", "*")]),
            &tag,
            modified
        ));
        assert!(!not_modified(
            &Request::get(&[("if-none-match", "\"x\"")]),
            &tag,
            modified
        ));
        assert!(not_modified(
            &Request::get(&[("if-modified-since", &date)]),
            &tag,
            modified
        ));
        let earlier = httpdate::fmt_http_date(modified - Duration::from_secs(2));
        assert!(!not_modified(
            &Request::get(&[("if-modified-since", &earlier)]),
            &tag,
            modified
        ));
        // If-None-Match wins.
        let both = [
            ("if-none-match", "\"x\""),
            ("if-modified-since", date.as_str()),
        ];
        assert!(!not_modified(&Request::get(&both), &tag, modified));
        assert!(!not_modified(
            &Request::get(&[("if-modified-since", "yesterday")]),
            &tag,
            modified
        ));
    }

    #[test]
    fn content_types() {
        assert_eq!(
            content_type(Path::new("a.html")),
            "text/html; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("a.css")), "text/css; charset=utf-8");
        assert!(content_type(Path::new("a.js")).ends_with("javascript; charset=utf-8"));
        assert_eq!(content_type(Path::new("a.png")), "image/png");
        assert_eq!(content_type(Path::new("noext")), "application/octet-stream");
    }
}
