//! The settings of a `bedrock` provider (Amazon Bedrock Runtime, Converse API): the region and
//! the AWS credentials it signs with, from the file (`${ENV}` allowed) or, when a setting is
//! left out, from the standard AWS environment variables.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{ConfigError, check_base_url};

/// Environment variables read for a setting the file leaves out, in order.
pub const REGION_VARS: [&str; 2] = ["AWS_REGION", "AWS_DEFAULT_REGION"];
/// See [`REGION_VARS`].
pub const ACCESS_KEY_VAR: &str = "AWS_ACCESS_KEY_ID";
/// See [`REGION_VARS`].
pub const SECRET_KEY_VAR: &str = "AWS_SECRET_ACCESS_KEY";
/// See [`REGION_VARS`].
pub const SESSION_TOKEN_VAR: &str = "AWS_SESSION_TOKEN";

/// The settings of a `bedrock` provider, complete once [`BedrockConfig::resolve`] ran.
#[derive(Clone, PartialEq)]
pub struct BedrockConfig {
    /// AWS region, e.g. `us-east-1` (file, else `AWS_REGION`, else `AWS_DEFAULT_REGION`).
    pub region: String,
    /// Access key id (file, else `AWS_ACCESS_KEY_ID`).
    pub access_key_id: String,
    /// Secret access key (file, else `AWS_SECRET_ACCESS_KEY`). A secret.
    pub secret_access_key: String,
    /// Session token of temporary credentials (file, else `AWS_SESSION_TOKEN`, else none). A
    /// secret.
    pub session_token: Option<String>,
    /// Base URL of the runtime API; default `https://bedrock-runtime.{region}.amazonaws.com`.
    pub base_url: String,
    /// Extra headers sent upstream with every request (signed with it). A value whose name
    /// looks like a credential is a secret.
    pub headers: BTreeMap<String, String>,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Whether `base_url` was written (else it follows the region).
    pub base_url_written: bool,
}

impl std::fmt::Debug for BedrockConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BedrockConfig")
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .field("base_url", &self.base_url)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl BedrockConfig {
    /// The settings as written (empty strings for those left out; [`BedrockConfig::resolve`]
    /// fills them).
    pub(super) fn written(
        region: Option<String>,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        session_token: Option<String>,
        base_url: Option<String>,
        headers: Option<BTreeMap<String, String>>,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            region: region.unwrap_or_default(),
            access_key_id: access_key_id.unwrap_or_default(),
            secret_access_key: secret_access_key.unwrap_or_default(),
            session_token,
            base_url_written: base_url.is_some(),
            base_url: base_url.unwrap_or_default(),
            headers: headers.unwrap_or_default(),
            connect_timeout,
        }
    }

    /// Interpolates `${ENV}` in the written settings (`interpolate(value, key)`) and takes
    /// each one left out from the AWS environment variables (`lookup`).
    ///
    /// # Errors
    /// A `${VAR}` that is not set.
    pub(super) fn resolve(
        &mut self,
        key: &str,
        interpolate: &impl Fn(&str, &str) -> Result<String, ConfigError>,
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let env = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let fill = |value: &mut String, field: &str, vars: &[&str]| -> Result<(), ConfigError> {
            if value.is_empty() {
                *value = vars.iter().find_map(|v| env(v)).unwrap_or_default();
            } else {
                *value = interpolate(value, &format!("{key}.{field}"))?;
            }
            Ok(())
        };
        fill(&mut self.region, "region", &REGION_VARS)?;
        fill(&mut self.access_key_id, "access_key_id", &[ACCESS_KEY_VAR])?;
        fill(&mut self.secret_access_key, "secret_access_key", &[SECRET_KEY_VAR])?;
        match &mut self.session_token {
            Some(t) => *t = interpolate(t, &format!("{key}.session_token"))?,
            None => self.session_token = env(SESSION_TOKEN_VAR),
        }
        if self.session_token.as_deref() == Some("") {
            self.session_token = None;
        }
        for (name, v) in &mut self.headers {
            *v = interpolate(v, &format!("{key}.headers.{name}"))?;
        }
        if self.base_url_written {
            self.base_url = interpolate(&self.base_url, &format!("{key}.base_url"))?;
        } else if !self.region.is_empty() {
            self.base_url = format!("https://bedrock-runtime.{}.amazonaws.com", self.region);
        }
        Ok(())
    }

    /// Checks the resolved settings; a missing one says where it is looked for.
    pub(super) fn validate(&self, key: &impl Fn(&str) -> String) -> Result<(), ConfigError> {
        let missing = |field: &str, vars: &str| {
            ConfigError::invalid(key(field), format!("is not set: write it, or set the environment variable {vars}"))
        };
        if self.region.is_empty() {
            return Err(missing("region", "AWS_REGION or AWS_DEFAULT_REGION"));
        }
        if !self.region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(ConfigError::invalid(key("region"), "must be an AWS region name such as us-east-1"));
        }
        if self.access_key_id.is_empty() {
            return Err(missing("access_key_id", ACCESS_KEY_VAR));
        }
        if self.secret_access_key.is_empty() {
            return Err(missing("secret_access_key", SECRET_KEY_VAR));
        }
        let url = &self.base_url;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::invalid(key("base_url"), "must start with http:// or https://"));
        }
        let uri: http::Uri = url.parse().map_err(|_| ConfigError::invalid(key("base_url"), "is not a valid URL"))?;
        check_base_url(&uri).map_err(|e| ConfigError::invalid(key("base_url"), e))?;
        for name in self.headers.keys() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(ConfigError::invalid(key(&format!("headers.{name}")), "is not a valid header name"));
            }
        }
        Ok(())
    }

    /// The credentials that are secrets: the secret key and the session token (the access key
    /// id is an identifier, shown in errors AWS returns).
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.secret_access_key.as_str()).chain(self.session_token.as_deref())
    }

    /// Replaces every secret by `<redacted>`.
    pub(super) fn redact(&mut self) {
        self.secret_access_key = "<redacted>".into();
        if let Some(t) = &mut self.session_token {
            *t = "<redacted>".into();
        }
        for v in self.headers.values_mut() {
            *v = "<redacted>".into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ConfigFile, ProviderKind, env};
    use super::*;

    /// The config of `text` with `${ENV}` and AWS variables looked up in `vars`.
    fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut cfg = Config::try_from(toml::from_str::<ConfigFile>(text).unwrap())?;
        env::interpolate_all(&mut cfg, |n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| (*v).to_owned()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn bedrock(cfg: &Config) -> &BedrockConfig {
        let ProviderKind::Bedrock(b) = &cfg.providers[0].kind else { panic!("not bedrock") };
        b
    }

    const TABLE: &str = "[[providers]]\nname = \"b\"\nkind = \"bedrock\"\nmodels = [\"m\"]\n";

    #[test]
    fn settings_left_out_come_from_the_aws_environment() {
        let vars = [
            ("AWS_DEFAULT_REGION", "eu-west-3"),
            ("AWS_ACCESS_KEY_ID", "AKIAENV"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret-key"),
            ("AWS_SESSION_TOKEN", "env-token-value"),
        ];
        let cfg = load(TABLE, &vars).unwrap();
        let b = bedrock(&cfg);
        assert_eq!((b.region.as_str(), b.access_key_id.as_str()), ("eu-west-3", "AKIAENV"));
        assert_eq!(b.session_token.as_deref(), Some("env-token-value"));
        assert_eq!(b.base_url, "https://bedrock-runtime.eu-west-3.amazonaws.com");
        let shown = toml::to_string(&cfg.redacted()).unwrap();
        assert!(!shown.contains("env-secret-key") && !shown.contains("env-token-value"), "{shown}");
        assert!(!format!("{cfg:?}").contains("env-secret-key"));
    }

    #[test]
    fn written_settings_win_and_take_env_references() {
        let text = format!(
            "{TABLE}region = \"us-west-2\"\naccess_key_id = \"AKIAFILE\"\nsecret_access_key = \"${{MY_SECRET}}\"\n\
             base_url = \"http://127.0.0.1:9/\"\n"
        );
        let vars = [("MY_SECRET", "from-my-secret"), ("AWS_REGION", "ignored-1"), ("AWS_SESSION_TOKEN", "tok-tok-tok")];
        let cfg = load(&text, &vars).unwrap();
        let b = bedrock(&cfg);
        assert_eq!((b.region.as_str(), b.secret_access_key.as_str()), ("us-west-2", "from-my-secret"));
        assert_eq!(b.base_url, "http://127.0.0.1:9/");
    }

    #[test]
    fn a_missing_region_or_key_names_the_key_and_the_variables() {
        let err = load(TABLE, &[]).unwrap_err().to_string();
        assert!(err.contains("providers[0].region") && err.contains("AWS_DEFAULT_REGION"), "{err}");
        let err = load(TABLE, &[("AWS_REGION", "us-east-1"), ("AWS_ACCESS_KEY_ID", "AKIA")]).unwrap_err().to_string();
        assert!(err.contains("providers[0].secret_access_key") && err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    }

    #[test]
    fn bedrock_settings_on_another_kind_are_refused_by_name() {
        let text =
            "[[providers]]\nname = \"o\"\nkind = \"openai\"\nbase_url = \"http://x/v1\"\nregion = \"us-east-1\"\n";
        let err = Config::from_toml(text).unwrap_err().to_string();
        assert!(err.contains("providers[0].region") && err.contains("bedrock"), "{err}");
        let text = format!("{TABLE}keys = [{{ value = \"sk-1\" }}]\n");
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("providers[0].keys"), "{err}");
    }
}
