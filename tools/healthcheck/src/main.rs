//! `corral-healthcheck URL`: one GET of an `http://host:port/path` URL, exit status 0 when the
//! answer is 200 and 1 otherwise, with the reason on stderr. The images are built from scratch
//! (no shell, no curl), so a container health check needs a program of its own; this one uses the
//! standard library only, to stay small.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: corral-healthcheck http://HOST:PORT/PATH");
        return ExitCode::from(2);
    };
    match check(&url) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{url}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `(host:port, path)` of an `http://` URL.
fn split(url: &str) -> Result<(&str, &str), String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs are checked")?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    if !authority.contains(':') {
        return Err("the URL needs a port".into());
    }
    Ok((authority, path))
}

fn check(url: &str) -> Result<(), String> {
    let (authority, path) = split(url)?;
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority} resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("cannot connect: {e}"))?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| format!("cannot send: {e}"))?;
    // The status line is all that is needed; read until its end.
    let mut head = Vec::with_capacity(64);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") && head.len() < 512 {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(format!("no answer: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let status = line.split_whitespace().nth(1).unwrap_or("");
    if status == "200" { Ok(()) } else { Err(format!("answered {:?}", line.trim_end())) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn serve_once(status_line: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(format!("{status_line}\r\ncontent-length: 0\r\n\r\n").as_bytes());
        });
        format!("http://{addr}/readyz")
    }

    #[test]
    fn ok_only_on_200() {
        assert_eq!(check(&serve_once("HTTP/1.1 200 OK")), Ok(()));
        let e = check(&serve_once("HTTP/1.1 503 Service Unavailable")).expect_err("503");
        assert!(e.contains("503"), "{e}");
    }

    #[test]
    fn refuses_what_it_cannot_check() {
        assert!(split("https://x:1/").is_err());
        assert!(split("http://x/").is_err());
        assert_eq!(split("http://127.0.0.1:8083"), Ok(("127.0.0.1:8083", "/")));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        assert!(check(&format!("http://{addr}/healthz")).expect_err("closed").contains("cannot connect"));
    }
}
