//! An HTTP client's transport errors in words that carry no URL: a URL
//! may hold a secret (a webhook's path, a login), and these words go to
//! logs, dead letters and the API.

/// What went wrong, without the URL.
pub fn described(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Timeout(_) => "timed out".into(),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::Io(e) => format!("i/o error ({})", e.kind()),
        ureq::Error::Tls(_) => "TLS error".into(),
        ureq::Error::BodyExceedsLimit(limit) => format!("longer than {limit} bytes"),
        _ => "request failed".into(),
    }
}
