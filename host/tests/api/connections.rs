//! Kept-alive connections over raw TCP: an answer that did not read its request body must leave
//! the connection usable, or say `Connection: close`.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::both_backends;

/// One HTTP/1.1 response as read off the wire.
struct WireResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl WireResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }
}

/// Reads one response (with a `Content-Length` body); `Err` if the connection ends first.
async fn read_response(reader: &mut BufReader<TcpStream>) -> Result<WireResponse, String> {
    let mut status_line = String::new();
    match reader.read_line(&mut status_line).await {
        Ok(0) => return Err("the server closed the connection".to_owned()),
        Ok(_) => {}
        Err(err) => return Err(format!("reading the status line: {err}")),
    }
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .await
            .map_err(|err| format!("reading headers: {err}"))?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header {line:?}"))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let mut response = WireResponse {
        status,
        headers,
        body: Vec::new(),
    };
    let len: usize = response
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .ok_or("the test server always sends Content-Length")?;
    response.body = vec![0; len];
    reader
        .read_exact(&mut response.body)
        .await
        .map_err(|err| format!("reading the body: {err}"))?;
    Ok(response)
}

/// A POST of `len` bytes of JSON to a route that needs a key, with no key.
fn unauthenticated_post(len: usize) -> (Vec<u8>, Vec<u8>) {
    let filler = "x".repeat(len - r#"{"name":""}"#.len());
    let body = format!(r#"{{"name":"{filler}"}}"#).into_bytes();
    let head = format!(
        "POST /members HTTP/1.1\r\nHost: coalition\r\nContent-Type: application/json\r\n\
         Idempotency-Key: conn-1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    (head, body)
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: coalition\r\n\r\n";

both_backends!(
    unread_body_of_a_401_does_not_break_the_kept_alive_connection,
    |app| async move {
        // The client has sent half its body when the server refuses it (no key): the rest
        // arrives only after the answer.
        let stream = TcpStream::connect(app.addr).await.expect("connect");
        let mut reader = BufReader::new(stream);
        let (head, body) = unauthenticated_post(64 * 1024);
        let half = body.len() / 2;
        reader.get_mut().write_all(&head).await.expect("write head");
        reader
            .get_mut()
            .write_all(&body[..half])
            .await
            .expect("write half");
        let first = read_response(&mut reader).await.expect("first answer");
        assert_eq!(
            first.status,
            401,
            "{}",
            String::from_utf8_lossy(&first.body)
        );
        if first.closes() {
            // Announced: the connection ends cleanly after the answer.
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest).await;
        } else {
            // Kept alive: the rest of the body and a second request are served.
            let stream = reader.get_mut();
            let sent = async {
                stream.write_all(&body[half..]).await?;
                stream.write_all(HEALTHZ).await
            }
            .await;
            let second = match sent {
                Ok(()) => read_response(&mut reader).await,
                Err(err) => Err(format!("writing the second request: {err}")),
            };
            match second {
                Ok(second) => assert_eq!(second.status, 200),
                Err(err) => panic!(
                    "the first answer kept the connection alive (no `Connection: close`) but \
                     the next request on it failed: {err}"
                ),
            }
        }

        // The whole body sent at once, then the next request right behind it: both answered
        // on the one connection (the unread body is drained), or the first says close.
        let stream = TcpStream::connect(app.addr).await.expect("connect");
        let mut reader = BufReader::new(stream);
        let (head, body) = unauthenticated_post(512 * 1024);
        let mut all = head;
        all.extend_from_slice(&body);
        all.extend_from_slice(HEALTHZ);
        reader.get_mut().write_all(&all).await.expect("write");
        let first = read_response(&mut reader).await.expect("first answer");
        assert_eq!(first.status, 401);
        if !first.closes() {
            let second = read_response(&mut reader).await.unwrap_or_else(|err| {
                panic!("kept alive without `Connection: close`, then: {err}")
            });
            assert_eq!(second.status, 200);
        }
        app.stop().await;
    }
);
