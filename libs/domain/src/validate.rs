//! Validation of a cluster spec. Kubernetes rules are those of apimachinery's
//! `IsQualifiedName` / `IsValidLabelValue`, since Argo CD stores clusters as Secrets and its
//! labels and annotations end up on that Secret.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::{ClusterSpec, DomainError};

const MAX_NAME_LEN: usize = 253;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const QUALIFIED_NAME_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;
/// Kubernetes' limit on the total size of an object's annotations (keys plus values).
const TOTAL_ANNOTATION_SIZE_MAX: usize = 256 * 1024;

const NAME_CHARS: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must \
     start and end with an alphanumeric character";

/// Checks a complete spec; applied to the spec that would result from a Create or Update.
pub fn validate(spec: &ClusterSpec) -> Result<(), DomainError> {
    validate_server(&spec.server)?;

    if spec.name.is_empty() {
        return Err(DomainError::invalid("name", "must not be empty"));
    }
    if spec.name.chars().count() > MAX_NAME_LEN {
        return Err(DomainError::invalid("name", format!("must be at most {MAX_NAME_LEN} characters")));
    }

    if let Some(i) = spec.namespaces.iter().position(String::is_empty) {
        return Err(DomainError::invalid(format!("namespaces[{i}]"), "must not be empty"));
    }

    if let Some(tls) = &spec.config.tls_client_config {
        for (field, data) in [
            ("config.tlsClientConfig.caData", &tls.ca_data),
            ("config.tlsClientConfig.certData", &tls.cert_data),
            ("config.tlsClientConfig.keyData", &tls.key_data),
        ] {
            if !data.is_empty() {
                check_pem(data).map_err(|m| DomainError::invalid(field, m))?;
            }
        }
    }

    for (key, value) in &spec.labels {
        check_qualified_name(key)
            .map_err(|why| DomainError::invalid("labels", format!("key {key:?} is not a valid label key: {why}")))?;
        check_label_value(value).map_err(|why| {
            DomainError::invalid("labels", format!("value {value:?} of key {key:?} is not a valid label value: {why}"))
        })?;
    }

    let mut annotation_size = 0usize;
    for (key, value) in &spec.annotations {
        check_qualified_name(key).map_err(|why| {
            DomainError::invalid("annotations", format!("key {key:?} is not a valid annotation key: {why}"))
        })?;
        annotation_size += key.len() + value.len();
    }
    if annotation_size > TOTAL_ANNOTATION_SIZE_MAX {
        return Err(DomainError::invalid(
            "annotations",
            format!("may not have more than {TOTAL_ANNOTATION_SIZE_MAX} bytes in total, has {annotation_size}"),
        ));
    }

    if let Some(shard) = spec.shard.filter(|s| *s < 0) {
        return Err(DomainError::invalid("shard", format!("must be >= 0, got {shard}")));
    }
    Ok(())
}

/// The longest server URL accepted. Lookups by server put the URL, percent-encoded (up to three
/// bytes per byte), in the request path: 2,048 bytes keep it well inside what HTTP servers and
/// proxies accept, and above any real API server address.
pub const MAX_SERVER_LEN: usize = 2048;

/// The value itself is echoed only where it cannot hold credentials (user info is refused first
/// and the other messages never repeat the URL).
fn validate_server(server: &str) -> Result<(), DomainError> {
    let err = |m: &str| DomainError::invalid("server", m);
    if server.is_empty() {
        return Err(err("must not be empty"));
    }
    if server.len() > MAX_SERVER_LEN {
        return Err(err(&format!("must be at most {MAX_SERVER_LEN} bytes, is {}", server.len())));
    }
    // A URL parser drops leading and trailing spaces and every tab or line break, and reads a
    // backslash as a slash: stored as sent, one endpoint could be registered as several clusters,
    // and control characters would reach logs and RBAC objects.
    if server.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err("must not contain spaces, tabs, line breaks or other control characters"));
    }
    if server.contains('\\') {
        return Err(err("must not contain a backslash"));
    }
    let url = url::Url::parse(server).map_err(|e| err(&format!("is not a valid URL: {e}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err(
            "must not contain credentials (user info before '@'); use config.username and config.password",
        ));
    }
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(err(&format!("must use http or https, not {:?}", url.scheme())));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(err("has no host"));
    }
    Ok(())
}

/// Kubernetes `IsQualifiedName`: `[prefix/]name`, the prefix a DNS-1123 subdomain.
fn check_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err("prefix part must not be empty".into());
        }
        check_dns1123_subdomain(prefix).map_err(|why| format!("prefix part {why}"))?;
    }
    if name.is_empty() {
        return Err("name part must not be empty".into());
    }
    if name.len() > QUALIFIED_NAME_MAX {
        return Err(format!("name part must be no more than {QUALIFIED_NAME_MAX} characters"));
    }
    if !is_name_token(name) {
        return Err(format!("name part {NAME_CHARS}"));
    }
    Ok(())
}

/// Kubernetes `IsValidLabelValue`: empty, or a name token of at most 63 characters.
fn check_label_value(value: &str) -> Result<(), String> {
    if value.len() > LABEL_VALUE_MAX {
        return Err(format!("must be no more than {LABEL_VALUE_MAX} characters"));
    }
    if !value.is_empty() && !is_name_token(value) {
        return Err(format!("a valid label value {NAME_CHARS}"));
    }
    Ok(())
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, non-empty.
fn is_name_token(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// Lowercase RFC 1123 subdomain: dot-separated labels of `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn check_dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        return Err(format!("must be no more than {DNS1123_SUBDOMAIN_MAX} characters"));
    }
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        match (b.first(), b.last()) {
            (Some(first), Some(last)) => {
                let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
                alnum(first) && alnum(last) && b.iter().all(|c| alnum(c) || *c == b'-')
            }
            _ => false,
        }
    };
    if s.split('.').all(label_ok) {
        Ok(())
    } else {
        Err("must be a lowercase RFC 1123 subdomain: lowercase alphanumeric characters, '-' \
             or '.', starting and ending with an alphanumeric character"
            .into())
    }
}

/// Accepts one or more PEM blocks (RFC 7468, with optional RFC 1421 headers such as
/// `Proc-Type`); text outside blocks is ignored, as Go's `pem.Decode` does.
fn check_pem(data: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(data).map_err(|_| "is not PEM: not UTF-8 text".to_owned())?;
    let mut lines = text.lines().map(str::trim);
    let mut blocks = 0usize;
    while let Some(line) = lines.next() {
        let Some(label) = line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        let mut in_headers = true;
        let mut terminated = false;
        for line in lines.by_ref() {
            if line == end {
                terminated = true;
                break;
            }
            if line.starts_with("-----") {
                return Err(format!("is not PEM: block {label:?} ends with {line:?}, expected {end:?}"));
            }
            if in_headers && line.contains(':') {
                continue;
            }
            in_headers = false;
            body.push_str(line);
        }
        if !terminated {
            return Err(format!("is not PEM: block {label:?} has no {end:?} line"));
        }
        if body.is_empty() {
            return Err(format!("is not PEM: block {label:?} is empty"));
        }
        BASE64.decode(body.as_bytes()).map_err(|e| format!("is not PEM: block {label:?} is not valid base64: {e}"))?;
        blocks += 1;
    }
    if blocks == 0 {
        return Err("is not PEM: no -----BEGIN ...----- block found".into());
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::collections::BTreeMap;

    use corral_proto::v1alpha1::TlsClientConfig;

    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\n\
        MIIBhTCCASugAwIBAgIQIRi6zePL6mKjOipn+dNuaTAKBggqhkjOPQQDAjASMRAw\n\
        DgYDVQQKEwdBY21lIENvMB4XDTE3MTAyMDE5NDMwNloXDTE4MTAyMDE5NDMwNlow\n\
        -----END CERTIFICATE-----\n";

    fn valid() -> ClusterSpec {
        ClusterSpec {
            server: "https://c1.example.com:6443/k8s/clusters/c-1".into(),
            name: "c1".into(),
            ..Default::default()
        }
    }

    fn field_of(r: Result<(), DomainError>) -> String {
        match r {
            Err(DomainError::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn a_minimal_spec_is_valid() {
        assert_eq!(validate(&valid()), Ok(()));
        assert_eq!(validate(&crate::in_cluster_spec()), Ok(()));
    }

    #[test]
    fn server_must_be_an_absolute_http_url_with_a_host() {
        for bad in [
            "",
            "not a url",
            "/relative/path",
            "c1.example.com",
            "ftp://c1.example.com",
            "unix:///var/run/k8s.sock",
            "https://",
        ] {
            let spec = ClusterSpec { server: bad.into(), ..valid() };
            assert_eq!(field_of(validate(&spec)), "server", "{bad:?}");
        }
        for good in ["http://10.0.0.1:8080", "https://[::1]:6443", "https://k8s"] {
            let spec = ClusterSpec { server: good.into(), ..valid() };
            assert_eq!(validate(&spec), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn server_urls_a_parser_would_rewrite_are_refused() {
        let long = format!("https://k8s.example.com/{}", "p".repeat(MAX_SERVER_LEN));
        for bad in [
            " https://a.example.com",
            "https://a.example.com ",
            "https://a\tb.example.com",
            "https://a.example.com\r\n",
            "https://a.example.com/\npath",
            "https://a\u{7f}.example.com",
            "https:\\\\a.example.com",
            "https://a.example.com\\x",
            "https://a.example .com",
            long.as_str(),
        ] {
            let spec = ClusterSpec { server: bad.into(), ..valid() };
            assert_eq!(field_of(validate(&spec)), "server", "{bad:?}");
        }
        let max = format!("https://k8s.example.com/{}", "p".repeat(MAX_SERVER_LEN - 24));
        assert_eq!(max.len(), MAX_SERVER_LEN);
        assert_eq!(validate(&ClusterSpec { server: max, ..valid() }), Ok(()));
    }

    #[test]
    fn credentials_in_the_server_url_are_refused_without_echoing_them() {
        for bad in
            ["https://user:pa55word@k8s.example.com:6443", "https://user@k8s.example.com", "https://:pa55word@k8s"]
        {
            let spec = ClusterSpec { server: bad.into(), ..valid() };
            let err = validate(&spec).unwrap_err();
            let msg = err.to_string();
            assert_eq!(field_of(Err(err)), "server", "{bad:?}");
            assert!(msg.contains("config.username"), "{msg}");
            assert!(!msg.contains("pa55word") && !msg.contains("user@"), "the message repeats the credential: {msg}");
        }
    }

    #[test]
    fn invalid_url_message_names_the_field() {
        let spec = ClusterSpec { server: "ftp://x".into(), ..valid() };
        let msg = validate(&spec).unwrap_err().to_string();
        assert!(msg.starts_with("invalid cluster: server: "), "{msg}");
    }

    #[test]
    fn name_is_required_and_bounded() {
        let empty = ClusterSpec { name: String::new(), ..valid() };
        assert_eq!(field_of(validate(&empty)), "name");
        let long = ClusterSpec { name: "x".repeat(254), ..valid() };
        assert_eq!(field_of(validate(&long)), "name");
        let max = ClusterSpec { name: "x".repeat(253), ..valid() };
        assert_eq!(validate(&max), Ok(()));
    }

    #[test]
    fn namespaces_must_not_be_empty_strings() {
        let spec = ClusterSpec { namespaces: vec!["a".into(), String::new()], ..valid() };
        assert_eq!(field_of(validate(&spec)), "namespaces[1]");
    }

    #[test]
    fn bad_label_key_is_rejected_with_kubernetes_wording() {
        let spec = ClusterSpec { labels: BTreeMap::from([("bad key".into(), "v".into())]), ..valid() };
        let err = validate(&spec).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with(r#"invalid cluster: labels: key "bad key" is not a valid label key"#), "{msg}");
    }

    #[test]
    fn label_keys_follow_qualified_name_rules() {
        let ok = ["env", "a", "app.kubernetes.io/name", "example.com/x_y.z-1", "A9"];
        let long_name = "x".repeat(64);
        let long_prefix = format!("{}/x", "a".repeat(254));
        let bad = [
            "",
            "/x",
            "x/",
            "-x",
            "x-",
            "Example.com/x",
            "a/b/c",
            "ex_ample.com/x",
            long_name.as_str(),
            long_prefix.as_str(),
        ];
        for k in ok {
            let spec = ClusterSpec { labels: BTreeMap::from([(k.into(), String::new())]), ..valid() };
            assert_eq!(validate(&spec), Ok(()), "{k:?}");
        }
        for k in bad {
            let spec = ClusterSpec { labels: BTreeMap::from([(k.into(), String::new())]), ..valid() };
            assert_eq!(field_of(validate(&spec)), "labels", "{k:?}");
        }
    }

    #[test]
    fn label_values_are_checked() {
        for (v, ok) in [
            ("", true),
            ("prod", true),
            ("a.b_c-d", true),
            ("has space", false),
            ("-x", false),
            ("x".repeat(63).as_str(), true),
            ("x".repeat(64).as_str(), false),
        ] {
            let spec = ClusterSpec { labels: BTreeMap::from([("k".into(), v.to_owned())]), ..valid() };
            assert_eq!(validate(&spec).is_ok(), ok, "{v:?}");
        }
    }

    #[test]
    fn annotation_keys_are_checked_but_values_are_free() {
        let ok = ClusterSpec {
            annotations: BTreeMap::from([("example.com/note".into(), "any text: at all!".into())]),
            ..valid()
        };
        assert_eq!(validate(&ok), Ok(()));
        let bad = ClusterSpec { annotations: BTreeMap::from([("bad key".into(), String::new())]), ..valid() };
        assert_eq!(field_of(validate(&bad)), "annotations");
        let huge = ClusterSpec { annotations: BTreeMap::from([("k".into(), "x".repeat(256 * 1024))]), ..valid() };
        assert_eq!(field_of(validate(&huge)), "annotations");
    }

    #[test]
    fn shard_must_not_be_negative() {
        let neg = ClusterSpec { shard: Some(-1), ..valid() };
        assert_eq!(field_of(validate(&neg)), "shard");
        let zero = ClusterSpec { shard: Some(0), ..valid() };
        assert_eq!(validate(&zero), Ok(()));
    }

    fn with_tls(tls: TlsClientConfig) -> ClusterSpec {
        let mut spec = valid();
        spec.config.tls_client_config = Some(tls);
        spec
    }

    #[test]
    fn tls_data_must_be_pem() {
        let good = with_tls(TlsClientConfig {
            ca_data: CERT.into(),
            cert_data: format!("junk before\n{CERT}\n{CERT}").into_bytes(),
            key_data: b"-----BEGIN RSA PRIVATE KEY-----\r\nProc-Type: 4,ENCRYPTED\r\nDEK-Info: AES-128-CBC,00\r\n\r\nAAAA\r\n-----END RSA PRIVATE KEY-----\r\n".to_vec(),
            ..Default::default()
        });
        assert_eq!(validate(&good), Ok(()));

        let cases: [(&str, TlsClientConfig); 5] = [
            (
                "config.tlsClientConfig.caData",
                TlsClientConfig { ca_data: b"not pem at all".to_vec(), ..Default::default() },
            ),
            (
                "config.tlsClientConfig.certData",
                TlsClientConfig {
                    cert_data: b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".to_vec(),
                    ..Default::default()
                },
            ),
            (
                "config.tlsClientConfig.keyData",
                TlsClientConfig { key_data: b"-----BEGIN PRIVATE KEY-----\nAAAA\n".to_vec(), ..Default::default() },
            ),
            (
                "config.tlsClientConfig.caData",
                TlsClientConfig {
                    ca_data: b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END X509-----\n".to_vec(),
                    ..Default::default()
                },
            ),
            ("config.tlsClientConfig.caData", TlsClientConfig { ca_data: vec![0xff, 0xfe], ..Default::default() }),
        ];
        for (field, tls) in cases {
            assert_eq!(field_of(validate(&with_tls(tls))), field);
        }
    }
}
