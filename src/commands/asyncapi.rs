//! `asyncapi [sink and route flags | --config FILE]`: the AsyncAPI 3.0 document of what this
//! configuration publishes — a server per sink (its URI without secrets), a channel per sink
//! (the destination template, its variables as parameters), one message per event type it
//! receives (after its filter; CDEvents for a `format=cdevents` sink) with the data JSON Schema
//! as payload and the CloudEvents attributes as headers in the binding's form, and the
//! protocol's binding objects. Each sink describes itself from the options it opens with
//! ([`sink_core::SinkFactory::describe`]); nothing is connected.

use super::{AppError, Outcome, ReplayReport};
use crate::cli::AsyncapiArgs;
use crate::config::{DeliveryPlan, SinkSpec};
use crate::encode::cdevents::{self, Format};
use crate::model::FactKind;
use serde_json::{Map, Value, json};
use sink_core::{ContentMode, Description};

/// The data schema every bridge event carries (`schemas/event-data.v1.json`).
const EVENT_DATA_SCHEMA: &str = include_str!("../../schemas/event-data.v1.json");
const SKIPPED_SCHEMA: &str = include_str!("../../schemas/cdevents/kfp-taskrun-skipped.json");
const WARNED_SCHEMA: &str = include_str!("../../schemas/cdevents/kfp-taskrun-warned.json");

/// Prints the document on standard output.
pub async fn asyncapi(args: &AsyncapiArgs) -> Result<(Outcome, ReplayReport), AppError> {
    let document = document_with(crate::sinks::registry(), args)?;
    let text = serde_json::to_string_pretty(&document).map_err(|e| AppError::Encode(e.into()))?;
    println!("{text}");
    Ok((Outcome::Clean, ReplayReport::default()))
}

/// The document for `args`, with the sinks `registry` has.
pub fn document_with(
    registry: &sink_core::Registry,
    args: &AsyncapiArgs,
) -> Result<Value, AppError> {
    let plan = crate::config::delivery_plan(&args.delivery)?;
    let encode = crate::config::encode(&args.encode)?;
    document(registry, &plan, &encode)
}

/// A component or channel key (`^[a-zA-Z0-9._-]+$`) for a sink's name.
fn key(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A JSON Schema of the shipped ones, as an AsyncAPI schema (JSON Schema draft-07's superset:
/// the same keywords, without the `$schema` line that names 2020-12).
fn schema(text: &str) -> Value {
    let mut value: Value = serde_json::from_str(text).expect("the shipped schemas are JSON");
    if let Some(object) = value.as_object_mut() {
        object.remove("$schema");
    }
    value
}

/// The event types a sink receives: the bridge's (with the configured prefix), or the CDEvents
/// they become; each with the short form `{type}` renders.
fn types_of(spec: &SinkSpec, prefix: &str, format: Format) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for kind in FactKind::ALL {
        let ty = format!("{prefix}.{}", kind.type_suffix());
        let selected = spec.filter.types.is_empty()
            || spec.filter.types.iter().any(|g| {
                sink_core::template::glob_match(g, kind.type_suffix())
                    || sink_core::template::glob_match(g, &ty)
            });
        if !selected {
            continue;
        }
        let ty = match format {
            Format::CloudEvents => ty,
            Format::CdEvents => cdevents::type_of(kind.type_suffix())
                .expect("every fact kind has a CDEvent")
                .to_owned(),
        };
        if !out.iter().any(|(t, _)| *t == ty) {
            let short = sink_core::template::short_type(&ty).to_owned();
            out.push((ty, short));
        }
    }
    out
}

/// The attributes as headers of a binary-mode message, in the binding's form; `overrides` are
/// `K_CE_OVERRIDES`' extensions, on every event.
fn headers(prefix: &str, ty: &str, dataschema: &str, overrides: &[&String]) -> Value {
    let mut properties = Map::new();
    let mut attribute = |name: &str, schema: Value| {
        properties.insert(format!("{prefix}{name}"), schema);
    };
    attribute("specversion", json!({"type": "string", "const": "1.0"}));
    attribute(
        "id",
        json!({"type": "string", "description": "deterministic: the same fact always has the same id; de-duplicate on it"}),
    );
    attribute(
        "source",
        json!({"type": "string", "description": "the workflow's API path"}),
    );
    attribute("type", json!({"type": "string", "const": ty}));
    attribute("subject", json!({"type": "string"}));
    attribute("time", json!({"type": "string", "format": "date-time"}));
    attribute("dataschema", json!({"type": "string", "const": dataschema}));
    for (name, description) in [
        (
            "kfprunid",
            "the KFP run id; absent for plain Argo workflows",
        ),
        ("namespace", "the workflow's namespace"),
        ("workflow", "the workflow's name"),
        ("pipeline", "the KFP pipeline name, when known"),
        (
            "partitionkey",
            "the KFP run id, or the workflow uid: one run's events in order",
        ),
        (
            "traceparent",
            "W3C trace context, when Argo traced the workflow",
        ),
    ] {
        attribute(name, json!({"type": "string", "description": description}));
    }
    let mut required: Vec<String> = ["specversion", "id", "source", "type"]
        .iter()
        .map(|a| format!("{prefix}{a}"))
        .collect();
    for name in overrides {
        attribute(
            name,
            json!({"type": "string", "description": "set by K_CE_OVERRIDES on every event"}),
        );
        required.push(format!("{prefix}{name}"));
    }
    json!({"type": "object", "properties": properties, "required": required})
}

/// The structured-mode envelope: the event's attributes as members, `data` as `payload` says.
fn envelope(ty: &str, dataschema: &str, data: Value, overrides: &[&String]) -> Value {
    let mut envelope = json!({
        "type": "object",
        "required": ["specversion", "id", "source", "type", "data"],
        "properties": {
            "specversion": {"type": "string", "const": "1.0"},
            "id": {"type": "string"},
            "source": {"type": "string"},
            "type": {"type": "string", "const": ty},
            "subject": {"type": "string"},
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"type": "string", "const": "application/json"},
            "dataschema": {"type": "string", "const": dataschema},
            "kfprunid": {"type": "string"},
            "namespace": {"type": "string"},
            "workflow": {"type": "string"},
            "pipeline": {"type": "string"},
            "partitionkey": {"type": "string"},
            "traceparent": {"type": "string"},
            "data": data,
        }
    });
    for name in overrides {
        envelope["properties"][name.as_str()] =
            json!({"type": "string", "description": "set by K_CE_OVERRIDES on every event"});
    }
    envelope
}

/// The data schema of an event type, by reference to `components.schemas`, and the
/// `dataschema` attribute its events carry (`--dataschema` for the bridge's own).
fn payload_ref(ty: &str, bridge_dataschema: &str) -> (Value, String) {
    let (name, dataschema) = match ty {
        t if t.starts_with("dev.cdeventsx.kfp-taskrun.skipped") => {
            ("KfpTaskrunSkipped", cdevents::schema_of(t).to_owned())
        }
        t if t.starts_with("dev.cdeventsx.kfp-taskrun.warned") => {
            ("KfpTaskrunWarned", cdevents::schema_of(t).to_owned())
        }
        t if t.starts_with("dev.cdevents.") => ("CDEvent", cdevents::schema_of(t).to_owned()),
        _ => ("EventData", bridge_dataschema.to_owned()),
    };
    (
        json!({"$ref": format!("#/components/schemas/{name}")}),
        dataschema,
    )
}

/// The channel parameters of a destination template: each `{variable}` it names.
fn parameters(address: &str, shorts: &[String]) -> Value {
    let mut out = Map::new();
    for (var, description) in [
        ("namespace", "the workflow's namespace (`_` when empty)"),
        ("workflow", "the workflow's name"),
        ("kfprunid", "the KFP run id (`_` for plain Argo workflows)"),
        ("pipeline", "the KFP pipeline name (`_` when unknown)"),
        ("type", "the short event type"),
    ] {
        if address.contains(&format!("{{{var}}}")) {
            let mut parameter = json!({"description": description});
            if var == "type" {
                parameter["enum"] = json!(shorts);
            }
            out.insert(var.to_owned(), parameter);
        }
    }
    Value::Object(out)
}

fn document(
    registry: &sink_core::Registry,
    plan: &DeliveryPlan,
    encode: &crate::encode::EncodeConfig,
) -> Result<Value, AppError> {
    let prefix = encode.type_prefix.as_str();
    let overrides: Vec<&String> = encode.overrides.keys().collect();
    let mut ids = std::collections::BTreeSet::new();
    let mut servers = Map::new();
    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();
    let mut undescribed = Vec::new();
    for (n, spec) in plan.sinks.iter().enumerate() {
        let name = spec
            .name
            .clone()
            .unwrap_or_else(|| registry.redact(&spec.uri));
        let Some(factory) = registry.factory(&spec.uri) else {
            // Opening would refuse it; say so the same way.
            return Err(AppError::Config(crate::config::ConfigError {
                context: name,
                message: format!("unsupported sink {:?}", sink_core::scheme(&spec.uri)),
            }));
        };
        let Some(described) = factory.describe(spec.config())? else {
            undescribed.push(name);
            continue;
        };
        let format = spec.format.unwrap_or_default();
        // The sink's chosen name, else its scheme and place in the configuration; made unique
        // (two names may map to one key).
        let base = match spec.name.as_deref().map(key).filter(|k| !k.is_empty()) {
            Some(name) => name,
            None => format!("{}-{}", key(sink_core::scheme(&spec.uri)), n + 1),
        };
        let mut id = base.clone();
        let mut again = 1;
        while !ids.insert(id.clone()) {
            again += 1;
            id = format!("{base}-{again}");
        }
        let Description {
            protocol,
            host,
            address,
            mode,
            summary,
            header_prefix,
            channel_binding,
            operation_binding,
            message_binding,
        } = described;
        servers.insert(
            id.clone(),
            json!({
                "host": host,
                "protocol": protocol,
                "description": format!("{} — {summary}", registry.redact(&spec.uri)),
            }),
        );
        // Bindings are keyed by protocol family: `https` uses the `http` bindings, `amqps` the
        // `amqp` ones.
        let binding = match protocol.as_str() {
            "https" => "http",
            "amqps" => "amqp",
            other => other,
        }
        .to_owned();
        let types = types_of(spec, prefix, format);
        let shorts: Vec<String> = types.iter().map(|(_, s)| s.clone()).collect();
        let mut channel_messages = Map::new();
        let mut operation_messages = Vec::new();
        for (ty, short) in &types {
            let message_key = key(short);
            let component = format!("{id}.{message_key}");
            let (data, dataschema) = payload_ref(ty, &encode.dataschema);
            let mut message = match mode {
                ContentMode::Binary => json!({
                    "contentType": "application/json",
                    "headers": headers(&header_prefix, ty, &dataschema, &overrides),
                    "payload": data,
                }),
                ContentMode::Structured => json!({
                    "contentType": "application/cloudevents+json",
                    "payload": envelope(ty, &dataschema, data, &overrides),
                }),
                ContentMode::Batch => json!({
                    "contentType": "application/cloudevents-batch+json",
                    "payload": {"type": "array", "items": envelope(ty, &dataschema, data, &overrides)},
                }),
            };
            message["name"] = json!(short);
            message["title"] = json!(ty);
            if let Some(message_binding) = &message_binding {
                message["bindings"] = json!({ binding.as_str(): message_binding });
            }
            messages.insert(component.clone(), message);
            channel_messages.insert(
                message_key.clone(),
                json!({"$ref": format!("#/components/messages/{component}")}),
            );
            operation_messages
                .push(json!({"$ref": format!("#/channels/{id}/messages/{message_key}")}));
        }
        let mut channel = json!({
            "address": address,
            "description": format!("What the sink {name} publishes, {}.", match format {
                Format::CloudEvents => "the bridge's CloudEvents",
                Format::CdEvents => "as CDEvents v0.5.1",
            }),
            "servers": [{"$ref": format!("#/servers/{id}")}],
            "messages": channel_messages,
        });
        // What the sink's filter lets through, beyond the types its messages list.
        let filter = &spec.filter;
        if !(filter.types.is_empty() && filter.namespaces.is_empty() && filter.pipelines.is_empty())
        {
            channel["x-kfp-event-bridge-filter"] = json!({
                "types": filter.types,
                "namespaces": filter.namespaces,
                "pipelines": filter.pipelines,
            });
        }
        let parameters = parameters(&address, &shorts);
        if parameters.as_object().is_some_and(|p| !p.is_empty()) {
            channel["parameters"] = parameters;
        }
        if let Some(channel_binding) = channel_binding {
            channel["bindings"] = json!({ binding.as_str(): channel_binding });
        }
        channels.insert(id.clone(), channel);
        let mut operation = json!({
            "action": "send",
            "summary": summary,
            "channel": {"$ref": format!("#/channels/{id}")},
            "messages": operation_messages,
        });
        if let Some(operation_binding) = operation_binding {
            operation["bindings"] = json!({ binding.as_str(): operation_binding });
        }
        operations.insert(format!("{id}.publish"), operation);
    }
    let mut description = String::from(
        "The events kfp-event-bridge publishes for Kubeflow Pipelines and Argo Workflows runs, \
         as CloudEvents v1.0: one channel per configured sink.",
    );
    if !undescribed.is_empty() {
        description.push_str(&format!(
            " Sinks that are not message channels (standard output, files) are left out: {}.",
            undescribed.join(", ")
        ));
    }
    let cdevent = json!({
        "type": "object",
        "description": "A CDEvent v0.5.1; its schema is the one its dataschema attribute names \
                        (https://cdevents.dev/0.5.1/schema/…).",
        "required": ["context", "subject"],
        "properties": {"context": {"type": "object"}, "subject": {"type": "object"}},
    });
    Ok(json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "kfp-event-bridge",
            "version": env!("CARGO_PKG_VERSION"),
            "description": description,
        },
        "defaultContentType": "application/json",
        "servers": servers,
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": {
                "EventData": schema(EVENT_DATA_SCHEMA),
                "CDEvent": cdevent,
                "KfpTaskrunSkipped": schema(SKIPPED_SCHEMA),
                "KfpTaskrunWarned": schema(WARNED_SCHEMA),
            },
            "messages": messages,
        },
    }))
}
