//! The runtime reports calls, failures by kind, fuel, latency and breaker trips.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coalition_runtime::metrics as names;
use coalition_runtime::{CallContext, ManualClock};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

use crate::helpers::*;

/// Records every value under `name{label=value,...}` (labels sorted).
#[derive(Default)]
struct Recording {
    values: Mutex<BTreeMap<String, Vec<f64>>>,
}

struct Series {
    key: String,
    recording: Arc<Recording>,
}

impl Series {
    fn push(&self, value: f64) {
        let mut values = self.recording.values.lock().expect("recording lock");
        values.entry(self.key.clone()).or_default().push(value);
    }
}

impl CounterFn for Series {
    fn increment(&self, value: u64) {
        self.push(value as f64)
    }
    fn absolute(&self, value: u64) {
        self.push(value as f64)
    }
}

impl GaugeFn for Series {
    fn increment(&self, value: f64) {
        self.push(value)
    }
    fn decrement(&self, value: f64) {
        self.push(-value)
    }
    fn set(&self, value: f64) {
        self.push(value)
    }
}

impl HistogramFn for Series {
    fn record(&self, value: f64) {
        self.push(value)
    }
}

struct TestRecorder(Arc<Recording>);

impl TestRecorder {
    fn series(&self, key: &Key) -> Arc<Series> {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        Arc::new(Series {
            key: format!("{}{{{}}}", key.name(), labels.join(",")),
            recording: self.0.clone(),
        })
    }

    /// Values recorded under a series whose name and labels contain all of `parts`.
    fn values(&self, parts: &[&str]) -> Vec<f64> {
        let values = self.0.values.lock().expect("recording lock");
        values
            .iter()
            .filter(|(key, _)| parts.iter().all(|p| key.contains(p)))
            .flat_map(|(_, v)| v.iter().copied())
            .collect()
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.series(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.series(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.series(key))
    }
}

#[test]
fn calls_failures_fuel_latency_and_trips_are_reported_per_plugin_version_and_hook() {
    let recorder = TestRecorder(Arc::new(Recording::default()));
    let clock = ManualClock::new();
    let t = runtime_with_clock(clock, 2, Duration::from_secs(30));
    // A thread-local recorder: other tests in this binary run on other threads.
    metrics::with_local_recorder(&recorder, || {
        names::describe();
        let coffee = load(&t.runtime, "coffee-bonus");
        let looping = load(&t.runtime, "infinite-loop");
        let ctx = CallContext::new(invocation(MONDAY_MARCH_17_0930_UTC8_MS, "coffee"));
        for _ in 0..3 {
            coffee
                .points_bonus(&ctx, &member(None), &order("coffee", 5))
                .expect("bonus");
        }
        let hook = looping.info().hooks[0];
        let input = any_input(&looping, hook);
        for _ in 0..3 {
            let _ = looping.call(&ctx, input.as_args());
        }
    });

    let coffee_bonus = ["plugin=coffee-bonus", "version=1.0.0", "hook=points-bonus"];
    let calls = recorder.values(&[&[names::CALLS_TOTAL][..], &coffee_bonus[..]].concat());
    assert_eq!(calls.iter().sum::<f64>(), 3.0);
    let fuel = recorder.values(&[&[names::FUEL_USED][..], &coffee_bonus[..]].concat());
    assert_eq!(fuel.len(), 3);
    assert!(
        fuel.iter().all(|f| *f > 0.0 && *f == fuel[0]),
        "deterministic fuel: {fuel:?}"
    );
    let latency =
        recorder.values(&[&[names::CALL_DURATION_SECONDS][..], &coffee_bonus[..]].concat());
    assert_eq!(latency.len(), 3);

    let loop_labels = ["plugin=infinite-loop", "version=0.1.0"];
    let fuel_failures = recorder.values(
        &[
            &[names::FAILURES_TOTAL, "kind=fuel_exhausted"][..],
            &loop_labels[..],
        ]
        .concat(),
    );
    assert_eq!(
        fuel_failures.iter().sum::<f64>(),
        2.0,
        "two runs, then the breaker refuses"
    );
    let refused = recorder.values(
        &[
            &[names::FAILURES_TOTAL, "kind=circuit_open"][..],
            &loop_labels[..],
        ]
        .concat(),
    );
    assert_eq!(refused.iter().sum::<f64>(), 1.0);
    let trips = recorder.values(&[&[names::BREAKER_TRIPS_TOTAL][..], &loop_labels[..]].concat());
    assert_eq!(trips.iter().sum::<f64>(), 1.0);
    let state = recorder.values(&[&[names::BREAKER_STATE][..], &loop_labels[..]].concat());
    assert_eq!(state.last().copied(), Some(2.0), "gauge says open");
    let loads = recorder.values(&[names::ARTIFACT_LOADS_TOTAL, "source=compiled"]);
    assert_eq!(loads.iter().sum::<f64>(), 2.0);
}
