//! The Confluent Schema Registry API, the three calls streamscore makes:
//! a schema by id, a schema registered under a subject, a schema looked up
//! under a subject. Blocking: the source stage's threads wait on it.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Deserialize;
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

use crate::config::SchemaRegistrySettings;

/// The media type of the Confluent API.
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// The Confluent API's error codes that answer "no such thing".
const SUBJECT_NOT_FOUND: i64 = 40401;
const SCHEMA_NOT_FOUND: i64 = 40403;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No URL answered: connection refused, timeout, TLS, a 5xx, a 429.
    #[error("schema registry {url} did not answer: {reason}")]
    Unreachable { url: String, reason: String },
    /// An answer that is a refusal (4xx): its message as the registry said it.
    #[error("schema registry {url} refused {what}: HTTP {status}{}: {message}", code.map(|c| format!(" (error_code {c})")).unwrap_or_default())]
    Refused {
        url: String,
        what: String,
        status: u16,
        code: Option<i64>,
        message: String,
    },
    #[error(
        "schema registry {url} answered {what} with a body that is not the Confluent API's: {reason}"
    )]
    Malformed {
        url: String,
        what: String,
        reason: String,
    },
    #[error("input.schema_registry: {0}")]
    Setup(String),
}

/// A schema as the registry holds it.
#[derive(Debug, Clone, Deserialize)]
pub struct RegisteredSchema {
    pub schema: String,
    /// Absent for Avro, the Confluent API's default.
    #[serde(default, rename = "schemaType")]
    pub schema_type: Option<String>,
}

/// One client for every call; its credentials never reach a log (no Debug).
pub struct RegistryClient {
    agent: ureq::Agent,
    urls: Vec<String>,
    authorization: Option<String>,
    /// The URL that answered last: tried first next time.
    preferred: AtomicUsize,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("urls", &self.urls)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "(set)"),
            )
            .finish_non_exhaustive()
    }
}

/// A response's status and body (read whole; the API's bodies are small).
struct Answer {
    url: String,
    status: u16,
    body: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: Option<i64>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct IdBody {
    id: u32,
}

impl RegistryClient {
    pub fn new(settings: &SchemaRegistrySettings) -> Result<Self, RegistryError> {
        let tls = tls_config(settings)?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(settings.request_timeout))
            .tls_config(tls)
            .user_agent(concat!("streamscore/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Self {
            agent: ureq::Agent::new_with_config(config),
            urls: settings
                .urls
                .iter()
                .map(|u| u.trim_end_matches('/').to_owned())
                .collect(),
            authorization: authorization(settings)?,
            preferred: AtomicUsize::new(0),
        })
    }

    /// The schema with this id; `None` when the registry answers that it has none.
    pub fn schema_by_id(&self, id: u32) -> Result<Option<RegisteredSchema>, RegistryError> {
        let what = format!("schema id {id}");
        let answer = self.call(&format!("/schemas/ids/{id}"), None)?;
        match answer.status {
            200 => parse(&answer, &what).map(Some),
            _ if error_code(&answer) == Some(SCHEMA_NOT_FOUND) => Ok(None),
            _ => Err(refusal(answer, what)),
        }
    }

    /// Registers `schema` under `subject` (an identical one already there
    /// gives its id) and returns its id.
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let what = format!("the schema for subject {subject}");
        let body = serde_json::json!({ "schema": schema }).to_string();
        let answer = self.call(&format!("/subjects/{subject}/versions"), Some(&body))?;
        match answer.status {
            200 => parse::<IdBody>(&answer, &what).map(|b| b.id),
            _ => Err(refusal(answer, what)),
        }
    }

    /// The id of `schema` under `subject`, `None` when it is not registered there.
    pub fn lookup(&self, subject: &str, schema: &str) -> Result<Option<u32>, RegistryError> {
        let what = format!("a lookup under subject {subject}");
        let body = serde_json::json!({ "schema": schema }).to_string();
        let answer = self.call(&format!("/subjects/{subject}"), Some(&body))?;
        match answer.status {
            200 => parse::<IdBody>(&answer, &what).map(|b| Some(b.id)),
            _ if matches!(
                error_code(&answer),
                Some(SUBJECT_NOT_FOUND | SCHEMA_NOT_FOUND)
            ) =>
            {
                Ok(None)
            }
            _ => Err(refusal(answer, what)),
        }
    }

    /// Sends the request to each URL in turn, from the one that answered
    /// last, until one answers with anything but a transient failure.
    /// Subjects are topic or Avro names, characters a path carries as they are.
    fn call(&self, path: &str, body: Option<&str>) -> Result<Answer, RegistryError> {
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..self.urls.len() {
            let index = (first + i) % self.urls.len();
            let url = format!("{}{path}", self.urls[index]);
            match self.send(&url, body) {
                Ok(answer) if answer.status >= 500 || answer.status == 429 => {
                    last = Some(RegistryError::Unreachable {
                        url: self.urls[index].clone(),
                        reason: format!("HTTP {}: {}", answer.status, message(&answer)),
                    });
                }
                Ok(answer) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(reason) => {
                    last = Some(RegistryError::Unreachable {
                        url: self.urls[index].clone(),
                        reason,
                    });
                }
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::Setup("no URL to call".into())))
    }

    fn send(&self, url: &str, body: Option<&str>) -> Result<Answer, String> {
        let result = match body {
            None => {
                let mut request = self.agent.get(url).header("Accept", CONTENT_TYPE);
                if let Some(auth) = &self.authorization {
                    request = request.header("Authorization", auth);
                }
                request.call()
            }
            Some(body) => {
                let mut request = self
                    .agent
                    .post(url)
                    .header("Accept", CONTENT_TYPE)
                    .header("Content-Type", CONTENT_TYPE);
                if let Some(auth) = &self.authorization {
                    request = request.header("Authorization", auth);
                }
                request.send(body)
            }
        };
        let mut response = result.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        Ok(Answer {
            url: url.to_owned(),
            status,
            body,
        })
    }
}

fn parse<T: serde::de::DeserializeOwned>(answer: &Answer, what: &str) -> Result<T, RegistryError> {
    serde_json::from_str(&answer.body).map_err(|e| RegistryError::Malformed {
        url: answer.url.clone(),
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

fn error_code(answer: &Answer) -> Option<i64> {
    serde_json::from_str::<ErrorBody>(&answer.body)
        .ok()
        .and_then(|e| e.error_code)
}

/// The registry's own message, else the start of the body.
fn message(answer: &Answer) -> String {
    serde_json::from_str::<ErrorBody>(&answer.body)
        .ok()
        .and_then(|e| e.message)
        .unwrap_or_else(|| answer.body.chars().take(200).collect())
}

fn refusal(answer: Answer, what: String) -> RegistryError {
    RegistryError::Refused {
        what,
        status: answer.status,
        code: error_code(&answer),
        message: message(&answer),
        url: answer.url,
    }
}

/// The Authorization header, from the secret's file or variable.
fn authorization(settings: &SchemaRegistrySettings) -> Result<Option<String>, RegistryError> {
    use base64::Engine;
    let secret =
        |file: &Option<std::path::PathBuf>, env: &Option<String>, key: &str| match (file, env) {
            (Some(path), _) => std::fs::read_to_string(path)
                .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_owned()))
                .map_err(|e| {
                    RegistryError::Setup(format!("cannot read {key}_file {}: {e}", path.display()))
                }),
            (None, Some(var)) => std::env::var(var).map(Some).map_err(|_| {
                RegistryError::Setup(format!("{key}_env names {var}, which is not set"))
            }),
            (None, None) => Ok(None),
        };
    if let Some(user) = &settings.basic_auth_user {
        let password = secret(
            &settings.basic_auth_password_file,
            &settings.basic_auth_password_env,
            "basic_auth_password",
        )?
        .unwrap_or_default();
        let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        return Ok(Some(format!("Basic {pair}")));
    }
    Ok(secret(
        &settings.bearer_token_file,
        &settings.bearer_token_env,
        "bearer_token",
    )?
    .map(|token| format!("Bearer {}", token.trim())))
}

fn tls_config(settings: &SchemaRegistrySettings) -> Result<TlsConfig, RegistryError> {
    let read = |path: &std::path::Path, key: &str| {
        std::fs::read(path)
            .map_err(|e| RegistryError::Setup(format!("cannot read {key} {}: {e}", path.display())))
    };
    let certificates =
        |pem: &[u8], key: &str| -> Result<Vec<Certificate<'static>>, RegistryError> {
            let mut out = Vec::new();
            for item in ureq::tls::parse_pem(pem) {
                match item {
                    Ok(PemItem::Certificate(c)) => out.push(c),
                    Ok(_) => {}
                    Err(e) => return Err(RegistryError::Setup(format!("{key}: {e}"))),
                }
            }
            if out.is_empty() {
                return Err(RegistryError::Setup(format!(
                    "{key} holds no PEM certificate"
                )));
            }
            Ok(out)
        };
    let mut builder = TlsConfig::builder();
    if let Some(ca) = &settings.ca_file {
        let roots = certificates(&read(ca, "ca_file")?, "ca_file")?;
        builder = builder.root_certs(RootCerts::new_with_certs(&roots));
    }
    if let (Some(cert), Some(key)) = (&settings.certificate_file, &settings.key_file) {
        let chain = certificates(&read(cert, "certificate_file")?, "certificate_file")?;
        let key = PrivateKey::from_pem(&read(key, "key_file")?)
            .map_err(|e| RegistryError::Setup(format!("key_file: {e}")))?;
        builder = builder.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    Ok(builder.build())
}
