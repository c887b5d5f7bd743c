//! Everything the producer counts, registered once under `tspi_producer_*`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tspi_bus::PublishMetrics;
use tspi_core::DatagramError;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Debug, Clone)]
pub struct ProducerMetrics {
    pub received: Counter,
    /// Indexed like [`DatagramError::REASONS`].
    pub invalid: [Counter; 5],
    pub filtered: Counter,
    /// Decoded but dropped because the publish queue was full.
    pub queue_dropped: Counter,
    /// The kernel's count of datagrams dropped on this socket's receive queue.
    pub kernel_dropped: Counter,
    pub publish: PublishMetrics,
}

impl ProducerMetrics {
    /// Fresh counters, registered in `registry` (use `Registry::with_prefix("tspi_producer")`).
    pub fn new(registry: &mut Registry) -> Self {
        let invalid_family = Family::<Reason, Counter>::default();
        let invalid = DatagramError::REASONS
            .map(|reason| invalid_family.get_or_create(&Reason { reason }).clone());
        let m = ProducerMetrics {
            received: Counter::default(),
            invalid,
            filtered: Counter::default(),
            queue_dropped: Counter::default(),
            kernel_dropped: Counter::default(),
            publish: PublishMetrics::default(),
        };
        registry.register(
            "datagrams_received",
            "UDP datagrams read from the socket",
            m.received.clone(),
        );
        registry.register(
            "datagrams_invalid",
            "Datagrams rejected by the decoder, by reason",
            invalid_family,
        );
        registry.register(
            "datagrams_filtered",
            "Valid datagrams from sensors outside --sensor-id",
            m.filtered.clone(),
        );
        let dropped = Family::<Reason, Counter>::default();
        registry.register(
            "datagrams_dropped",
            "Datagrams lost inside the producer, by reason",
            dropped.clone(),
        );
        // Share the family's counters with our handles. One statement per lookup: the
        // family's read guard lives to the end of its statement.
        let queue_dropped = dropped
            .get_or_create(&Reason {
                reason: "queue_full",
            })
            .clone();
        let kernel_dropped = dropped
            .get_or_create(&Reason {
                reason: "kernel_receive_queue",
            })
            .clone();
        let m = ProducerMetrics {
            queue_dropped,
            kernel_dropped,
            ..m
        };
        m.publish.register(registry);
        m
    }

    pub fn invalid_total(&self) -> u64 {
        self.invalid.iter().map(Counter::get).sum()
    }
}
