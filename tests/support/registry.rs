//! A real schema registry of a test's own (Apicurio Registry, Confluent API,
//! run by scripts/registry under a unique name); deleted on drop.

use std::path::PathBuf;
use std::process::Command;

use streamscore::schema_registry::RegistryClient;
use streamscore::{SchemaRegistrySettings, Settings};

pub struct OwnRegistry {
    pub name: String,
    /// The Confluent-compatible base URL.
    pub url: String,
    /// With mutual TLS: the CA that signed the registry's certificate, and a
    /// client certificate and key it signed too.
    pub tls: Option<RegistryTls>,
}

pub struct RegistryTls {
    pub ca: PathBuf,
    pub certificate: PathBuf,
    pub key: PathBuf,
}

impl OwnRegistry {
    pub fn start(name: &str) -> Self {
        let name = format!("{name}-{}", std::process::id());
        let url = registry(&["start", &name]).trim().to_owned();
        Self {
            name,
            url,
            tls: None,
        }
    }

    /// https only, and only for clients with a certificate its test CA signed.
    pub fn start_mtls(name: &str) -> Self {
        let name = format!("{name}-{}", std::process::id());
        let url = registry(&["start", &name, "--mtls"]).trim().to_owned();
        let state = super::root().join(".local/registry-run").join(&name);
        let tls = RegistryTls {
            ca: state.join("ca.pem"),
            certificate: state.join("client.pem"),
            key: state.join("client.key"),
        };
        Self {
            name,
            url,
            tls: Some(tls),
        }
    }

    /// crash (SIGKILL, data kept), halt or restart (see scripts/registry).
    pub fn act(&self, action: &str) {
        registry(&[action, &self.name]);
    }

    /// Points the settings' input (and so the score schema's id) at this
    /// registry, with no writer schema files: every id comes from it.
    pub fn attach(&self, settings: &mut Settings) {
        settings.input.schema_registry.urls = vec![self.url.clone()];
        if let Some(tls) = &self.tls {
            let r = &mut settings.input.schema_registry;
            r.ca_file = Some(tls.ca.clone());
            r.certificate_file = Some(tls.certificate.clone());
            r.key_file = Some(tls.key.clone());
        }
        settings.input.avro_schemas.clear();
        settings.validate().expect("registry settings are valid");
    }

    pub fn client(&self) -> RegistryClient {
        let mut s: SchemaRegistrySettings = Settings::load_with_env(None, false)
            .expect("defaults load")
            .input
            .schema_registry;
        s.urls = vec![self.url.clone()];
        if let Some(tls) = &self.tls {
            s.ca_file = Some(tls.ca.clone());
            s.certificate_file = Some(tls.certificate.clone());
            s.key_file = Some(tls.key.clone());
        }
        RegistryClient::new(&s).expect("a client for the test registry")
    }

    /// Registers a schema file of schemas/ under `subject`; its id.
    pub fn register(&self, subject: &str, schema_file: &str) -> u32 {
        let text = std::fs::read_to_string(super::root().join("schemas").join(schema_file))
            .expect("the schema file reads");
        self.client()
            .register(subject, &text)
            .expect("the registry takes the schema")
    }

    /// `PUT /config/{subject}`: the subject's compatibility level.
    pub fn set_compatibility(&self, subject: &str, level: &str) {
        let answer = ureq::put(&format!("{}/config/{subject}", self.url))
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .send(format!(r#"{{"compatibility":"{level}"}}"#))
            .expect("the registry sets the compatibility");
        assert_eq!(answer.status(), 200);
    }
}

impl Drop for OwnRegistry {
    fn drop(&mut self) {
        let _ = Command::new(super::root().join("scripts/registry"))
            .args(["stop", &self.name])
            .status();
    }
}

fn registry(args: &[&str]) -> String {
    let mut c = Command::new(super::root().join("scripts/registry"));
    c.args(args);
    super::run_ok(&mut c)
}
