//! AWS IAM authentication for EKS clusters, as `aws-iam-authenticator` and `argocd-k8s-auth aws`
//! do it: the bearer token is `k8s-aws-v1.` followed by the unpadded base64url of an STS
//! `GetCallerIdentity` URL presigned with AWS Signature Version 4 (60 s), whose signed headers
//! include `x-k8s-aws-id: <cluster name>`.
//!
//! Signature V4 is written out here (HMAC-SHA256 from the RustCrypto crates) rather than taken
//! from `aws-sigv4`, which brings the AWS SDK's runtime crates along for one presigned GET; the
//! tests check it against AWS's published signing examples.

use std::path::PathBuf;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error(
        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or a profile in the shared credentials file"
    )]
    NoCredentials,
    #[error("AWS profile {0:?} not found in the shared credentials file")]
    NoProfile(String),
    #[error("assuming role {role}: {reason}")]
    AssumeRole { role: String, reason: String },
}

/// Credentials for signing. The secret never appears in `Debug`.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

impl Credentials {
    /// From the environment, else from `profile` (or `AWS_PROFILE`, or `default`) in the shared
    /// credentials file (`AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`).
    pub fn load(profile: &str) -> Result<Credentials, AwsError> {
        if profile.is_empty()
            && let (Ok(id), Ok(secret)) = (std::env::var("AWS_ACCESS_KEY_ID"), std::env::var("AWS_SECRET_ACCESS_KEY"))
        {
            return Ok(Credentials {
                access_key_id: id,
                secret_access_key: secret,
                session_token: std::env::var("AWS_SESSION_TOKEN").ok(),
            });
        }
        let profile = if profile.is_empty() {
            std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into())
        } else {
            profile.to_string()
        };
        let path = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")))
            .ok_or(AwsError::NoCredentials)?;
        let text = std::fs::read_to_string(path).map_err(|_| AwsError::NoCredentials)?;
        parse_profile(&text, &profile).ok_or(AwsError::NoProfile(profile))
    }
}

/// One `[profile]` section of an INI-style shared credentials file.
fn parse_profile(text: &str, profile: &str) -> Option<Credentials> {
    let mut in_section = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') && line.ends_with(']') {
            in_section = line[1..line.len() - 1].trim() == profile;
            continue;
        }
        if !in_section {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_string();
            match k.trim() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        }
    }
    Some(Credentials { access_key_id: id?, secret_access_key: secret?, session_token: token })
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// RFC 3986 encoding as Signature V4 wants it: unreserved characters as they are, the rest `%XX`.
pub fn uri_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The canonical query string: each name and value encoded, sorted by name then value.
pub fn canonical_query(params: &[(&str, &str)]) -> String {
    let mut encoded: Vec<(String, String)> = params.iter().map(|(k, v)| (uri_encode(k), uri_encode(v))).collect();
    encoded.sort();
    encoded.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// The signature of a canonical request (Signature V4, HMAC-SHA256).
pub fn signature(
    secret_access_key: &str,
    amz_date: &str,
    region: &str,
    service: &str,
    canonical_request: &str,
) -> String {
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", sha256_hex(canonical_request.as_bytes()));
    let k_date = hmac(format!("AWS4{secret_access_key}").as_bytes(), date);
    let k_region = hmac(&k_date, region);
    let k_service = hmac(&k_region, service);
    let k_signing = hmac(&k_service, "aws4_request");
    hex(&hmac(&k_signing, &string_to_sign))
}

/// The STS endpoint: `AWS_ENDPOINT_URL_STS` when set (the SDKs' override), else the regional one.
fn sts_endpoint(region: &str) -> String {
    std::env::var("AWS_ENDPOINT_URL_STS").ok().filter(|e| !e.is_empty()).unwrap_or_else(|| {
        if region.is_empty() || region == "us-east-1" {
            "https://sts.amazonaws.com".into()
        } else {
            format!("https://sts.{region}.amazonaws.com")
        }
    })
}

fn xml_value<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].trim())
}

/// Temporary credentials for `role_arn` from STS AssumeRole (a presigned GET, 15 minutes), as
/// `argocd-k8s-auth aws --role-arn` does before it builds the EKS token.
pub async fn assume_role(
    creds: &Credentials,
    role_arn: &str,
    region: &str,
    now: DateTime<Utc>,
) -> Result<Credentials, AwsError> {
    let fail = |reason: String| AwsError::AssumeRole { role: role_arn.to_string(), reason };
    let endpoint = sts_endpoint(region);
    let uri: http::Uri = endpoint.parse().map_err(|e| fail(format!("bad STS endpoint {endpoint:?}: {e}")))?;
    let host = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .ok_or_else(|| fail(format!("bad STS endpoint {endpoint:?}")))?;
    let signing_region = if region.is_empty() { "us-east-1" } else { region };
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let credential = format!("{}/{}/{signing_region}/sts/aws4_request", creds.access_key_id, &amz_date[..8]);
    let session = format!("corral-{}", now.timestamp());
    let mut params = vec![
        ("Action", "AssumeRole"),
        ("DurationSeconds", "900"),
        ("RoleArn", role_arn),
        ("RoleSessionName", session.as_str()),
        ("Version", "2011-06-15"),
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
        ("X-Amz-Credential", credential.as_str()),
        ("X-Amz-Date", amz_date.as_str()),
        ("X-Amz-Expires", "60"),
        ("X-Amz-SignedHeaders", "host"),
    ];
    if let Some(t) = &creds.session_token {
        params.push(("X-Amz-Security-Token", t.as_str()));
    }
    let query = canonical_query(&params);
    let canonical_request = format!("GET\n/\n{query}\nhost:{host}\n\nhost\n{}", sha256_hex(b""));
    let sig = signature(&creds.secret_access_key, &amz_date, signing_region, "sts", &canonical_request);
    // kube-rs's client is the HTTPS client already here; STS is just another endpoint to it.
    let mut config = kube::Config::new(uri);
    config.connect_timeout = Some(std::time::Duration::from_secs(5));
    config.read_timeout = Some(std::time::Duration::from_secs(5));
    if let Ok(bundle) = std::env::var("AWS_CA_BUNDLE") {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let pem = std::fs::read(&bundle).map_err(|e| fail(format!("AWS_CA_BUNDLE {bundle}: {e}")))?;
        let roots: Result<Vec<Vec<u8>>, _> =
            CertificateDer::pem_slice_iter(&pem).map(|c| c.map(|c| c.as_ref().to_vec())).collect();
        config.root_cert = Some(roots.map_err(|e| fail(format!("AWS_CA_BUNDLE {bundle}: {e}")))?);
    }
    let client = kube::Client::try_from(config).map_err(|e| fail(e.to_string()))?;
    let request = http::Request::get(format!("/?{query}&X-Amz-Signature={sig}"))
        .body(Vec::new())
        .map_err(|e| fail(e.to_string()))?;
    let xml = client.request_text(request).await.map_err(|e| fail(format!("STS: {e}")))?;
    let value =
        |tag: &str| xml_value(&xml, tag).map(str::to_string).ok_or_else(|| fail(format!("STS answer has no {tag}")));
    Ok(Credentials {
        access_key_id: value("AccessKeyId")?,
        secret_access_key: value("SecretAccessKey")?,
        session_token: Some(value("SessionToken")?),
    })
}

/// The EKS bearer token for `cluster_name`, signed at `now` for 60 s.
pub fn eks_token(cluster_name: &str, region: &str, creds: &Credentials, now: DateTime<Utc>) -> String {
    let host = if region.is_empty() || region == "us-east-1" {
        "sts.amazonaws.com".to_string()
    } else {
        format!("sts.{region}.amazonaws.com")
    };
    let region = if region.is_empty() { "us-east-1" } else { region };
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let credential = format!("{}/{}/{region}/sts/aws4_request", creds.access_key_id, &amz_date[..8]);
    let mut params = vec![
        ("Action", "GetCallerIdentity"),
        ("Version", "2011-06-15"),
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
        ("X-Amz-Credential", credential.as_str()),
        ("X-Amz-Date", amz_date.as_str()),
        ("X-Amz-Expires", "60"),
        ("X-Amz-SignedHeaders", "host;x-k8s-aws-id"),
    ];
    if let Some(t) = &creds.session_token {
        params.push(("X-Amz-Security-Token", t.as_str()));
    }
    let query = canonical_query(&params);
    let canonical_request =
        format!("GET\n/\n{query}\nhost:{host}\nx-k8s-aws-id:{cluster_name}\n\nhost;x-k8s-aws-id\n{}", sha256_hex(b""));
    let sig = signature(&creds.secret_access_key, &amz_date, region, "sts", &canonical_request);
    let url = format!("https://{host}/?{query}&X-Amz-Signature={sig}");
    format!("k8s-aws-v1.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url))
}

#[cfg(test)]
mod tests {
    use super::*;

    // AWS Signature V4 test suite, "get-vanilla-query-order-key-case".
    #[test]
    fn signature_v4_test_suite_vector() {
        let query = canonical_query(&[("Param2", "value2"), ("Param1", "value1")]);
        assert_eq!(query, "Param1=value1&Param2=value2");
        let canonical = format!(
            "GET\n/\n{query}\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n{}",
            sha256_hex(b"")
        );
        let sig = signature(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20150830T123600Z",
            "us-east-1",
            "service",
            &canonical,
        );
        assert_eq!(sig, "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500");
    }

    // Amazon S3's worked example "GET Object" (header-based signing, same algorithm).
    #[test]
    fn s3_get_object_example() {
        let empty = sha256_hex(b"");
        assert_eq!(empty, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let canonical = format!(
            "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\nx-amz-content-sha256:{empty}\nx-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n{empty}"
        );
        assert_eq!(
            sha256_hex(canonical.as_bytes()),
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
        );
        let sig =
            signature("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "20130524T000000Z", "us-east-1", "s3", &canonical);
        assert_eq!(sig, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    }

    #[test]
    fn eks_token_is_a_presigned_get_caller_identity_url() {
        let creds = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "secret-key".into(),
            session_token: Some("session/token=".into()),
        };
        let now = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").expect("time").with_timezone(&Utc);
        let token = eks_token("prod-cluster", "eu-west-1", &creds, now);
        let encoded = token.strip_prefix("k8s-aws-v1.").expect("prefix");
        assert!(!encoded.contains('='), "unpadded");
        let url =
            String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).expect("base64url"))
                .expect("utf8");
        assert!(
            url.starts_with("https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&"),
            "{url}"
        );
        for part in [
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "X-Amz-Credential=AKIDEXAMPLE%2F20260102%2Feu-west-1%2Fsts%2Faws4_request",
            "X-Amz-Date=20260102T030405Z",
            "X-Amz-Expires=60",
            "X-Amz-Security-Token=session%2Ftoken%3D",
            "X-Amz-SignedHeaders=host%3Bx-k8s-aws-id",
        ] {
            assert!(url.contains(part), "{part} missing from {url}");
        }
        assert!(!url.contains("secret-key"));
        // The signature covers the cluster name: another cluster, another token.
        assert_ne!(token, eks_token("other-cluster", "eu-west-1", &creds, now));
        // Deterministic for the same inputs.
        assert_eq!(token, eks_token("prod-cluster", "eu-west-1", &creds, now));
        assert!(eks_token("c", "", &creds, now).len() > 20);
    }

    #[test]
    fn xml_values() {
        let xml = "<AssumeRoleResponse><AssumeRoleResult><Credentials><AccessKeyId>ASIA1</AccessKeyId>\n<SecretAccessKey> s3 </SecretAccessKey></Credentials></AssumeRoleResult></AssumeRoleResponse>";
        assert_eq!(xml_value(xml, "AccessKeyId"), Some("ASIA1"));
        assert_eq!(xml_value(xml, "SecretAccessKey"), Some("s3"));
        assert_eq!(xml_value(xml, "SessionToken"), None);
    }

    #[test]
    fn shared_credentials_file_profiles() {
        let text = "[default]\naws_access_key_id = A1\naws_secret_access_key = S1\n\n[ci]\naws_access_key_id=A2\naws_secret_access_key=S2\naws_session_token=T2\n";
        let d = parse_profile(text, "default").expect("default");
        assert_eq!((d.access_key_id.as_str(), d.secret_access_key.as_str(), d.session_token), ("A1", "S1", None));
        let ci = parse_profile(text, "ci").expect("ci");
        assert_eq!(ci.session_token.as_deref(), Some("T2"));
        assert!(parse_profile(text, "missing").is_none());
        assert!(!format!("{ci:?}").contains("S2"), "Debug never shows the secret");
    }
}
