//! AWS Signature Version 4 for Bedrock requests (service `bedrock`), with AWS's own signer
//! (`aws-sigv4`), over the exact bytes sent. Adds `x-amz-date`, `authorization` and, with
//! temporary credentials, `x-amz-security-token`.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningParams, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::config::BedrockConfig;
use crate::error::{Error, ErrorKind};

/// The signing name of the Bedrock Runtime API.
const SERVICE: &str = "bedrock";

/// The region and credentials a provider signs with.
pub struct Signer {
    region: String,
    identity: Identity,
}

impl Signer {
    /// The signer of a provider's config.
    pub fn new(cfg: &BedrockConfig) -> Self {
        let creds = Credentials::new(
            &cfg.access_key_id,
            &cfg.secret_access_key,
            cfg.session_token.clone(),
            None,
            "weir-config",
        );
        Self { region: cfg.region.clone(), identity: creds.into() }
    }

    /// Signs `req` (whose body is `body`) as of now: every header it carries is signed.
    ///
    /// # Errors
    /// 500 if the request cannot be signed (a header value that is not text).
    pub fn sign(&self, req: &mut Request<Full<Bytes>>, body: &[u8]) -> Result<(), Error> {
        self.sign_at(req, body, SystemTime::now())
    }

    fn sign_at(&self, req: &mut Request<Full<Bytes>>, body: &[u8], time: SystemTime) -> Result<(), Error> {
        let failed = |why: String| Error::new(ErrorKind::Internal, format!("cannot sign the Bedrock request: {why}"));
        let params: SigningParams<'_> = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name(SERVICE)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| failed(e.to_string()))?
            .into();
        let mut headers = Vec::with_capacity(req.headers().len());
        for (name, value) in req.headers() {
            let value = value.to_str().map_err(|_| failed(format!("header {name} is not text")))?;
            headers.push((name.as_str(), value));
        }
        let uri = req.uri().to_string();
        let signable = SignableRequest::new(req.method().as_str(), uri, headers.into_iter(), SignableBody::Bytes(body))
            .map_err(|e| failed(e.to_string()))?;
        let (instructions, _signature) = sign(signable, &params).map_err(|e| failed(e.to_string()))?.into_parts();
        instructions.apply_to_request_http1x(req);
        // Kept out of any header dump (hyper's Debug, traces).
        for name in ["authorization", "x-amz-security-token"] {
            if let Some(v) = req.headers_mut().get_mut(name) {
                v.set_sensitive(true);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(token: Option<&str>) -> BedrockConfig {
        BedrockConfig {
            region: "us-east-1".into(),
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: token.map(str::to_owned),
            base_url: "https://bedrock-runtime.us-east-1.amazonaws.com".into(),
            headers: Default::default(),
            connect_timeout: Duration::from_secs(1),
            base_url_written: false,
        }
    }

    fn request() -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(Bytes::from_static(b"{}")));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = "https://bedrock-runtime.us-east-1.amazonaws.com/model/m%3A0/converse".parse().unwrap();
        req.headers_mut().insert("host", "bedrock-runtime.us-east-1.amazonaws.com".parse().unwrap());
        req.headers_mut().insert("content-type", "application/json".parse().unwrap());
        req
    }

    #[test]
    fn a_signed_request_names_the_scope_and_signed_headers() {
        let mut req = request();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        Signer::new(&config(None)).sign_at(&mut req, b"{}", at).unwrap();
        let auth = req.headers()["authorization"].to_str().unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/us-east-1/bedrock/aws4_request"),
            "{auth}"
        );
        assert!(auth.contains("SignedHeaders=content-type;host;x-amz-date,"), "{auth}");
        assert_eq!(req.headers()["x-amz-date"], "20231114T221320Z");
        assert!(req.headers()["authorization"].is_sensitive());
        assert!(req.headers().get("x-amz-security-token").is_none());
    }

    #[test]
    fn a_session_token_is_sent_and_signed() {
        let mut req = request();
        Signer::new(&config(Some("the-session-token"))).sign(&mut req, b"{}").unwrap();
        assert_eq!(req.headers()["x-amz-security-token"], "the-session-token");
        let auth = req.headers()["authorization"].to_str().unwrap();
        assert!(auth.contains("x-amz-security-token"), "{auth}");
    }
}
