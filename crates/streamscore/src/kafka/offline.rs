//! librdkafka's own refusals of a config, found before any connection:
//! creating a client checks every property name and value (and loads TLS
//! and SASL material) without reaching a broker. `run` and `check` both go
//! through here, so `check` refuses what `run` would.

use rdkafka::ClientConfig;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::BaseProducer;

use crate::config::{Settings, is_secret_property, librdkafka_name};
use crate::kafka::client::{Role, client_config};

#[derive(Debug, thiserror::Error)]
pub enum ClientRefused {
    #[error(
        "config: {key} = {value} is not allowed: librdkafka refuses it for the {client}: {message} (librdkafka's CONFIGURATION.md lists its properties and their values)"
    )]
    Property {
        client: &'static str,
        key: String,
        value: String,
        message: String,
    },
    #[error("config: librdkafka cannot create the Kafka {client}: {message}")]
    Create {
        client: &'static str,
        message: String,
    },
}

/// Creates the processor's consumer, transactional producer and admin client
/// and drops them at once. None of them connects before it is asked for
/// something (the consumer is not subscribed, the producer has not
/// initialised its transactions), so this needs no reachable broker.
pub fn create_clients(settings: &Settings) -> Result<(), ClientRefused> {
    let consumer = "consumer";
    let _: BaseConsumer = create(settings, Role::Consumer, consumer)?;
    let _: BaseProducer = create(settings, Role::Producer, "transactional producer")?;
    let _: AdminClient<DefaultClientContext> = create(settings, Role::Admin, "admin client")?;
    Ok(())
}

fn create<T: rdkafka::config::FromClientConfig>(
    settings: &Settings,
    role: Role<'_>,
    client: &'static str,
) -> Result<T, ClientRefused> {
    let config: ClientConfig = client_config(settings, role);
    config
        .create()
        .map_err(|e| refused(settings, role, client, e))
}

/// Names the setting as the operator wrote it (`kafka.properties.x`), from
/// the last of the role's tables that sets it (the one that won).
fn refused(
    settings: &Settings,
    role: Role<'_>,
    client: &'static str,
    e: KafkaError,
) -> ClientRefused {
    let KafkaError::ClientConfig(_, message, name, value) = e else {
        let message = match e {
            KafkaError::ClientCreation(m) => m,
            other => other.to_string(),
        };
        return ClientRefused::Create { client, message };
    };
    let k = &settings.kafka;
    let own_table = match role {
        Role::Consumer => Some(("kafka.consumer", &k.consumer)),
        Role::Producer | Role::Admin => Some(("kafka.producer", &k.producer)),
        _ => None,
    };
    let written = own_table
        .into_iter()
        .chain([("kafka.properties", &k.properties)])
        .find_map(|(table, props)| {
            props
                .keys()
                .find(|key| librdkafka_name(key) == name)
                .map(|key| format!("{table}.{key}"))
        });
    let key = written.unwrap_or(name);
    let value = if is_secret_property(&key) {
        "<redacted>".to_owned()
    } else {
        format!("{value:?}")
    };
    ClientRefused::Property {
        client,
        key,
        value,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_with(table: &str, key: &str, value: &str) -> Settings {
        let mut s = Settings::load_with_env(None, false).unwrap();
        // Nothing listens here: creating the clients must not need a broker.
        s.kafka.bootstrap_servers = "127.0.0.1:1".into();
        let props = match table {
            "consumer" => &mut s.kafka.consumer,
            "producer" => &mut s.kafka.producer,
            _ => &mut s.kafka.properties,
        };
        props.insert(key.into(), value.into());
        s
    }

    #[test]
    fn valid_settings_create_every_client_without_a_broker() {
        let s = settings_with("properties", "security.protocol", "PLAINTEXT");
        create_clients(&s).expect("no broker is needed to create the clients");
    }

    #[test]
    fn an_unknown_property_is_named_as_written() {
        let s = settings_with("properties", "securty.protocol", "SSL");
        let err = create_clients(&s).unwrap_err().to_string();
        assert!(
            err.starts_with("config: kafka.properties.securty.protocol = \"SSL\" is not allowed: "),
            "{err}"
        );
        assert!(err.contains("No such configuration property"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    #[test]
    fn an_invalid_value_is_named_with_its_table() {
        let s = settings_with("consumer", "security_protocol", "TLS");
        let err = create_clients(&s).unwrap_err().to_string();
        assert!(
            err.starts_with("config: kafka.consumer.security_protocol = \"TLS\" is not allowed: "),
            "{err}"
        );
        assert!(err.contains("Invalid value \"TLS\""), "{err}");
    }

    #[test]
    fn a_refused_secret_is_not_printed() {
        let s = settings_with("producer", "sasl.password.typo", "hunter2");
        let err = create_clients(&s).unwrap_err().to_string();
        assert!(
            err.contains("kafka.producer.sasl.password.typo = <redacted>"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn material_librdkafka_loads_at_creation_is_checked() {
        let mut s = settings_with("properties", "security.protocol", "SSL");
        s.kafka
            .properties
            .insert("ssl.ca.location".into(), "/nonexistent/ca.pem".into());
        let err = create_clients(&s).unwrap_err().to_string();
        assert!(err.contains("ssl.ca.location"), "{err}");
    }
}
