//! Everything the producer counts, registered once under `tspi_producer_*`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
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
    pub sensors: SensorMetrics,
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
            sensors: SensorMetrics::default(),
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
        m.sensors.register(registry);
        m
    }

    pub fn invalid_total(&self) -> u64 {
        self.invalid.iter().map(Counter::get).sum()
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SensorLabel {
    /// The sensor id, or "other" for the sensors beyond `--max-sensor-series`.
    sensor: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SensorQuantile {
    sensor: String,
    quantile: &'static str,
}

/// Per-sensor quality series (`tspi_producer_sensor_*`), at most `--max-sensor-series`
/// sensors plus "other".
#[derive(Debug, Clone, Default)]
pub struct SensorMetrics {
    datagrams: Family<SensorLabel, Counter>,
    gaps: Family<SensorLabel, Counter>,
    missed: Family<SensorLabel, Counter>,
    clock_jumps: Family<SensorLabel, Counter>,
    out_of_order: Family<SensorLabel, Counter>,
    repeated: Family<SensorLabel, Counter>,
    late: Family<SensorLabel, Counter>,
    rate: Family<SensorLabel, Gauge<f64, AtomicU64>>,
    cadence: Family<SensorLabel, Gauge<f64, AtomicU64>>,
    skew: Family<SensorQuantile, Gauge<f64, AtomicU64>>,
}

impl SensorMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let counters = [
            ("sensor_datagrams", "Valid datagrams per sensor", &self.datagrams),
            ("sensor_gaps", "Times a sensor fell silent for more than 1.5 of its periods (frames still missing after 1 s)", &self.gaps),
            ("sensor_missed_frames", "Frames missing in those gaps, against the sensor's own cadence", &self.missed),
            ("sensor_clock_jumps", "Jumps of a sensor's TSPI clock that its receive times do not share", &self.clock_jumps),
            ("sensor_out_of_order", "Datagrams older than the sensor's latest (by less than 1 s)", &self.out_of_order),
            ("sensor_repeated", "Datagrams repeating the sensor's latest TSPI time", &self.repeated),
            ("sensor_late", "Datagrams received more than 1 s after the sensor's usual skew", &self.late),
        ];
        for (name, help, family) in counters {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "sensor_rate_hz",
            "Datagrams per second per sensor over the last second",
            self.rate.clone(),
        );
        registry.register(
            "sensor_cadence_seconds",
            "A sensor's nominal period: the median of its recent regular steps",
            self.cadence.clone(),
        );
        registry.register(
            "sensor_skew_seconds",
            "Receive time minus TSPI time, p50 and p99 of the sensor's last 256 datagrams",
            self.skew.clone(),
        );
    }

    /// Bring the series up to date with `stats` of `sensor` ("other" for the rest);
    /// `before` is what was exported last time (the counters only move forward).
    pub fn export(
        &self,
        sensor: &str,
        stats: &crate::quality::SensorStats,
        before: &crate::quality::SensorStats,
        rate_hz: f64,
        figures: bool,
    ) {
        let label = SensorLabel {
            sensor: sensor.to_owned(),
        };
        for (family, now, then) in [
            (&self.datagrams, stats.datagrams, before.datagrams),
            (&self.gaps, stats.gaps, before.gaps),
            (&self.missed, stats.missed, before.missed),
            (&self.clock_jumps, stats.clock_jumps, before.clock_jumps),
            (&self.out_of_order, stats.out_of_order, before.out_of_order),
            (&self.repeated, stats.repeated, before.repeated),
            (&self.late, stats.late, before.late),
        ] {
            family
                .get_or_create(&label)
                .inc_by(now.saturating_sub(then));
        }
        self.rate.get_or_create(&label).set(rate_hz);
        if figures {
            self.cadence.get_or_create(&label).set(stats.cadence_s);
            for (quantile, value) in [("0.5", stats.skew_p50_s), ("0.99", stats.skew_p99_s)] {
                self.skew
                    .get_or_create(&SensorQuantile {
                        sensor: sensor.to_owned(),
                        quantile,
                    })
                    .set(value);
            }
        }
    }
}
