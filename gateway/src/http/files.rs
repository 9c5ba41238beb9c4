//! `/v1/files`: the OpenAI Files door. Uploads are `multipart/form-data`, parsed here as a stream
//! (the file part goes to the store piece by piece, never whole in memory); content downloads stream
//! from the store. Permissions and limits are the files service's.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use serde::Serialize;

use super::body::{self, Body};
use crate::domain::principal::Principal;
use crate::services::files::{self, ListParams, Upload};
use crate::services::{AppState, Error};

/// Part headers larger than this are refused (a form field's headers are a few hundred bytes).
const MAX_PART_HEADERS: usize = 16 * 1024;
/// Non-file form fields larger than this are refused.
const MAX_FIELD: usize = 64 * 1024;

/// A JSON response.
pub(crate) fn json<T: Serialize>(value: &T) -> Result<Response<Body>, Error> {
    let bytes = serde_json::to_vec(value).map_err(|e| Error::Internal(e.to_string().into()))?;
    let mut resp = Response::new(body::full(Bytes::from(bytes)));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// Query parameters, percent-decoded.
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec =
                |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
            (dec(k), dec(v))
        })
        .collect()
}

pub(crate) fn parse_limit(v: &str) -> Result<i64, Error> {
    v.parse::<i64>().map_err(|_| Error::bad_request("limit must be an integer.", Some("limit")))
}

/// Routes `/v1/files…` (`tail` is the path after `/files`).
///
/// # Errors
/// The service's errors, for `rescue`.
pub async fn handle(
    state: &Arc<AppState>,
    principal: &Principal,
    tail: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let method = req.method().clone();
    let segments: Vec<&str> = tail.split('/').filter(|s| !s.is_empty()).collect();
    match (method.as_str(), segments.as_slice()) {
        ("POST", []) => upload(state, principal, req).await,
        ("GET", []) => {
            let mut p = ListParams::default();
            for (k, v) in query_pairs(req.uri().query()) {
                match k.as_str() {
                    "purpose" => p.purpose = Some(v),
                    "after" => p.after = Some(v),
                    "limit" => p.limit = Some(parse_limit(&v)?),
                    "order" => p.order = Some(v),
                    _ => {}
                }
            }
            json(&files::list(state, principal, &p).await?)
        }
        ("GET", [id]) => json(&files::retrieve(state, principal, id).await?),
        ("DELETE", [id]) => json(&files::delete(state, principal, id).await?),
        ("GET", [id, "content"]) => content(state, principal, id).await,
        (_, [] | [_] | [_, "content"]) => Err(Error::MethodNotAllowed),
        _ => Err(Error::NotFound("Unknown files path.".into())),
    }
}

async fn content(state: &Arc<AppState>, principal: &Principal, id: &str) -> Result<Response<Body>, Error> {
    let content = files::content(state, principal, id).await?;
    let len = content.bytes;
    let filename = content.filename.replace(['"', '\\', '\r', '\n'], "_");
    let stream = futures_util::stream::unfold(content, |mut c| async move { c.next().await.map(|b| (b, c)) })
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::try_from(format!("attachment; filename=\"{filename}\"")) {
        h.insert(CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// The `boundary` of a `multipart/form-data` content type.
fn boundary(req: &Request<Incoming>) -> Result<String, Error> {
    let ct = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut parts = ct.split(';').map(str::trim);
    if !parts.next().is_some_and(|m| m.eq_ignore_ascii_case("multipart/form-data")) {
        return Err(Error::bad_request("Uploads must be multipart/form-data.", None));
    }
    for p in parts {
        if let Some((k, v)) = p.split_once('=') {
            if k.trim().eq_ignore_ascii_case("boundary") {
                let b = v.trim().trim_matches('"');
                if !b.is_empty() && b.len() <= 200 {
                    return Ok(b.to_owned());
                }
            }
        }
    }
    Err(Error::bad_request("multipart/form-data without a boundary.", None))
}

/// What a part's headers say.
#[derive(Debug, Default, PartialEq, Eq)]
struct PartHead {
    name: String,
    filename: Option<String>,
}

fn part_head(raw: &[u8]) -> PartHead {
    let text = String::from_utf8_lossy(raw);
    let mut head = PartHead::default();
    for line in text.split("\r\n") {
        let Some((k, v)) = line.split_once(':') else { continue };
        if !k.trim().eq_ignore_ascii_case("content-disposition") {
            continue;
        }
        for param in v.split(';').map(str::trim) {
            if let Some((pk, pv)) = param.split_once('=') {
                let pv = pv.trim().trim_matches('"').to_owned();
                match pk.trim().to_ascii_lowercase().as_str() {
                    "name" => head.name = pv,
                    "filename" => head.filename = Some(pv),
                    _ => {}
                }
            }
        }
    }
    head
}

/// Where the current part's bytes go.
enum Target {
    File(Upload),
    Field(String, Vec<u8>),
    Skip,
}

enum Phase {
    /// Looking for the next delimiter (preamble, or the data of the current part).
    Data,
    /// After a delimiter: `--` ends the body, CRLF starts a part's headers.
    AfterDelimiter,
    Headers,
    Done,
}

/// The streaming multipart parser's state; the buffer never holds more than one body frame plus a
/// delimiter's length (or one part's headers).
struct Form {
    delimiter: Vec<u8>,
    buf: BytesMut,
    phase: Phase,
    target: Target,
    fields: Vec<(String, String)>,
    /// The file part, once complete.
    finished: Option<Upload>,
}

impl Form {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Consumes what it can of the buffer; `eof` says no more bytes will come.
    async fn step(&mut self, state: &Arc<AppState>, principal: &Principal, eof: bool) -> Result<(), Error> {
        loop {
            match self.phase {
                Phase::Done => {
                    self.buf.clear();
                    return Ok(());
                }
                Phase::Data => {
                    if let Some(at) = memchr::memmem::find(&self.buf, &self.delimiter) {
                        let data = self.buf.split_to(at);
                        self.feed(&data).await?;
                        self.buf.advance(self.delimiter.len());
                        self.end_part().await?;
                        self.phase = Phase::AfterDelimiter;
                        continue;
                    }
                    // Keep a delimiter's length back: it may be split across frames.
                    let keep = self.delimiter.len();
                    if self.buf.len() > keep {
                        let data = self.buf.split_to(self.buf.len() - keep);
                        self.feed(&data).await?;
                    }
                    if eof {
                        return Err(Error::bad_request("The multipart body ended before its closing boundary.", None));
                    }
                    return Ok(());
                }
                Phase::AfterDelimiter => {
                    if self.buf.len() < 2 {
                        if eof {
                            return Err(Error::bad_request("The multipart body ended early.", None));
                        }
                        return Ok(());
                    }
                    if &self.buf[..2] == b"--" {
                        self.phase = Phase::Done;
                    } else {
                        // Transport padding then CRLF.
                        let Some(nl) = memchr::memmem::find(&self.buf, b"\r\n") else {
                            if eof || self.buf.len() > 256 {
                                return Err(Error::bad_request("Malformed multipart boundary line.", None));
                            }
                            return Ok(());
                        };
                        self.buf.advance(nl + 2);
                        self.phase = Phase::Headers;
                    }
                }
                Phase::Headers => {
                    let Some(end) = memchr::memmem::find(&self.buf, b"\r\n\r\n") else {
                        if self.buf.len() > MAX_PART_HEADERS {
                            return Err(Error::bad_request("Multipart part headers are too large.", None));
                        }
                        if eof {
                            return Err(Error::bad_request("The multipart body ended inside part headers.", None));
                        }
                        return Ok(());
                    };
                    let head = part_head(&self.buf[..end]);
                    self.buf.advance(end + 4);
                    self.target = match (head.name.as_str(), head.filename) {
                        ("file", Some(filename)) => {
                            let purpose = self.field("purpose").map(str::to_owned);
                            Target::File(files::begin_upload(state, principal, &filename, purpose.as_deref()).await?)
                        }
                        ("file", None) => {
                            return Err(Error::bad_request("The `file` part needs a filename.", Some("file")))
                        }
                        (name, _) => Target::Field(name.to_owned(), Vec::new()),
                    };
                    self.phase = Phase::Data;
                }
            }
        }
    }

    async fn feed(&mut self, data: &[u8]) -> Result<(), Error> {
        match &mut self.target {
            Target::File(upload) => upload.write(data).await,
            Target::Field(_, v) => {
                if v.len() + data.len() > MAX_FIELD {
                    return Err(Error::bad_request("A multipart form field is too large.", None));
                }
                v.extend_from_slice(data);
                Ok(())
            }
            Target::Skip => Ok(()),
        }
    }

    async fn end_part(&mut self) -> Result<(), Error> {
        match std::mem::replace(&mut self.target, Target::Skip) {
            Target::Field(name, value) => self.fields.push((name, String::from_utf8_lossy(&value).into_owned())),
            Target::File(upload) => {
                if self.finished.is_some() {
                    upload.abort().await;
                    return Err(Error::bad_request("Only one file per upload.", Some("file")));
                }
                self.finished = Some(upload);
            }
            Target::Skip => {}
        }
        Ok(())
    }
}

async fn upload(state: &Arc<AppState>, principal: &Principal, req: Request<Incoming>) -> Result<Response<Body>, Error> {
    // Authorization first: an admin key gets 401 before any byte is read.
    principal.own_scope()?;
    let boundary = boundary(&req)?;
    let idle = state.config.server.body_read_timeout;
    let mut body = req.into_body();
    let mut delimiter = b"\r\n--".to_vec();
    delimiter.extend_from_slice(boundary.as_bytes());
    let mut form = Form {
        delimiter,
        // A leading CRLF makes the first boundary look like every other delimiter.
        buf: BytesMut::from(&b"\r\n"[..]),
        phase: Phase::Data,
        target: Target::Skip,
        fields: Vec::new(),
        finished: None,
    };
    let result = async {
        loop {
            let frame = match tokio::time::timeout(idle, body.frame()).await {
                Err(_) => return Err(Error::BodyTimeout { secs: idle.as_secs() }),
                Ok(None) => break,
                Ok(Some(Err(_))) => return Err(Error::ClientDisconnected),
                Ok(Some(Ok(f))) => f,
            };
            if let Ok(data) = frame.into_data() {
                form.buf.extend_from_slice(&data);
                form.step(state, principal, false).await?;
            }
        }
        form.step(state, principal, true).await
    }
    .await;
    if let Err(e) = result {
        if let Target::File(u) = std::mem::replace(&mut form.target, Target::Skip) {
            u.abort().await;
        }
        if let Some(u) = form.finished.take() {
            u.abort().await;
        }
        // A refused upload (too large, bad purpose) is read to its end, discarded, so the client,
        // still sending, gets the 400 instead of a reset connection.
        if matches!(e, Error::BadRequest { .. }) {
            let mut drained = 0u64;
            while drained < 2 * files::MAX_FILE_BYTES {
                match tokio::time::timeout(idle, body.frame()).await {
                    Ok(Some(Ok(f))) => drained += f.data_ref().map_or(0, |d| d.len() as u64),
                    _ => break,
                }
            }
        }
        return Err(e);
    }
    let Some(upload) = form.finished.take() else {
        return Err(Error::bad_request("Missing required parameter: 'file'.", Some("file")));
    };
    let expires = match (form.field("expires_after[anchor]"), form.field("expires_after[seconds]")) {
        (None, None) => None,
        (Some("created_at") | None, Some(s)) => match s.trim().parse::<i64>() {
            Ok(v) => Some(v),
            Err(_) => {
                upload.abort().await;
                return Err(Error::bad_request(
                    "expires_after[seconds] must be an integer.",
                    Some("expires_after[seconds]"),
                ));
            }
        },
        _ => {
            upload.abort().await;
            return Err(Error::bad_request(
                "expires_after[anchor] must be 'created_at'.",
                Some("expires_after[anchor]"),
            ));
        }
    };
    let purpose = form.field("purpose").map(str::to_owned);
    let file = upload.finish(state, purpose.as_deref(), expires).await?;
    let mut resp = json(&file)?;
    *resp.status_mut() = StatusCode::OK;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_headers_name_and_filename() {
        let h = part_head(b"Content-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\nContent-Type: application/octet-stream");
        assert_eq!(h, PartHead { name: "file".into(), filename: Some("in.jsonl".into()) });
        let h = part_head(b"content-disposition: form-data; name=purpose");
        assert_eq!(h, PartHead { name: "purpose".into(), filename: None });
    }

    #[test]
    fn query_pairs_decode() {
        let q = query_pairs(Some("purpose=batch&after=file-a%2Bb&limit=2"));
        assert_eq!(q[1], ("after".to_owned(), "file-a+b".to_owned()));
        assert_eq!(q.len(), 3);
    }
}
