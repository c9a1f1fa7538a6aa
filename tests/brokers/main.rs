//! Delivery to real servers started per test on loopback ports: HTTP receivers, nats-server
//! (JetStream, auth), a Kafka-protocol broker, RabbitMQ; the example consumers against them.

#[path = "../support/mod.rs"]
mod support;

mod amqp_delivery;
mod examples;
mod http_delivery;
mod kafka_delivery;
mod kafka_security;
mod nats_auth;
mod nats_delivery;
