//! The lifecycle with a plugin whose state is a call count and whose build
//! says when it traps, once with state (like a detector) and once without
//! (like an alert handler).

use super::*;

#[derive(Clone)]
struct Counter {
    fingerprint: &'static str,
    /// Traps on every call from this count on.
    traps_from: Option<u32>,
}

struct CounterInstance {
    count: u32,
    traps_from: Option<u32>,
}

impl Build for Counter {
    type Instance = CounterInstance;
    const KIND: &'static str = "detector";
    const NOUN: &'static str = "plugin";

    fn version(&self) -> &str {
        "1.0.0"
    }

    fn fingerprint(&self) -> &str {
        self.fingerprint
    }

    fn start(&self, config: &str) -> Result<CounterInstance, PluginFault> {
        if config == "reject" {
            return Err(PluginFault::Guest("config rejected".into()));
        }
        Ok(CounterInstance { count: 0, traps_from: self.traps_from })
    }

    fn snapshot(instance: &mut CounterInstance) -> Option<Result<Vec<u8>, PluginFault>> {
        Some(Ok(instance.count.to_le_bytes().to_vec()))
    }

    fn restore(instance: &mut CounterInstance, state: &[u8]) -> Result<(), PluginFault> {
        instance.count = u32::from_le_bytes(state.try_into().map_err(|_| PluginFault::Guest("bad state".into()))?);
        Ok(())
    }
}

/// The same plugin without state, as an alert handler is.
#[derive(Clone)]
struct Stateless(Counter);

impl Build for Stateless {
    type Instance = CounterInstance;
    const KIND: &'static str = "alert-handler";
    const NOUN: &'static str = "alert handler";

    fn version(&self) -> &str {
        self.0.version()
    }

    fn fingerprint(&self) -> &str {
        self.0.fingerprint
    }

    fn start(&self, config: &str) -> Result<CounterInstance, PluginFault> {
        self.0.start(config)
    }
}

fn counter(fingerprint: &'static str, traps_from: Option<u32>) -> Counter {
    Counter { fingerprint, traps_from }
}

fn count(instance: &mut CounterInstance) -> Result<u32, PluginFault> {
    if instance.traps_from.is_some_and(|n| instance.count >= n) {
        return Err(PluginFault::Trap("unreachable".into()));
    }
    instance.count += 1;
    Ok(instance.count)
}

fn owner() -> Owner {
    Owner { tenant: "t".into(), pipeline: Some("p".into()) }
}

fn answer<B: Build<Instance = CounterInstance>>(lifecycle: &mut Lifecycle<B>) -> Option<u32> {
    match lifecycle.call(0, count)? {
        Ok(n) => Some(n),
        Err(fault) => match fault.then {
            AfterFault::RolledBack { retried, .. } => retried.ok(),
            _ => None,
        },
    }
}

fn statuses<B: Build>(lifecycle: &Lifecycle<B>) -> Vec<(String, Status)> {
    lifecycle.stats().into_iter().map(|s| (s.fingerprint, s.status)).collect()
}

#[test]
fn a_new_build_carries_the_state_on_and_a_failing_one_rolls_back() {
    let mut lifecycle = Lifecycle::start("counter", owner(), counter("a", None), "{}".into(), None, 3).unwrap();
    assert_eq!((answer(&mut lifecycle), answer(&mut lifecycle)), (Some(1), Some(2)));
    lifecycle.follow(&counter("b", None), None, "{}".into()).unwrap();
    assert_eq!(answer(&mut lifecycle), Some(3), "b carries on from a's count");
    lifecycle.follow(&counter("c", Some(0)), None, "{}".into()).unwrap();
    let Some(Err(fault)) = lifecycle.call(0, count) else { panic!("c traps") };
    let AfterFault::RolledBack { bad, previous, message, retried } = fault.then else { panic!("c is on probation") };
    assert_eq!((bad.fingerprint, previous.fingerprint, retried.ok()), ("c", "b", Some(4)), "b made the call c failed");
    assert!(message.contains("rolled back to version"), "{message}");
    assert_eq!(statuses(&lifecycle), [("b".into(), Status::Active), ("c".into(), Status::RolledBack)]);
    lifecycle.follow(&counter("c", Some(0)), None, "{}".into()).unwrap();
    assert_eq!(answer(&mut lifecycle), Some(5), "a build that was rolled back is not taken again");
}

#[test]
fn traps_rebuild_from_the_last_snapshot_and_repeated_ones_quarantine() {
    let mut lifecycle = Lifecycle::start("counter", owner(), counter("a", Some(2)), "{}".into(), None, 2).unwrap();
    assert_eq!((answer(&mut lifecycle), answer(&mut lifecycle)), (Some(1), Some(2)));
    let Some(Err(first)) = lifecycle.call(0, count) else { panic!("traps at 2") };
    assert!(matches!((first.failures_in_row, &first.then), (1, AfterFault::Counted)));
    assert_eq!(lifecycle.stats()[0].rebuilds, 1, "the trap threw the instance away");
    assert_eq!(answer(&mut lifecycle), Some(1), "rebuilt from the start state: no snapshot was due yet");
    assert_eq!(answer(&mut lifecycle), Some(2));
    let Some(Err(second)) = lifecycle.call(0, count) else { panic!("traps at 2") };
    assert_eq!(second.failures_in_row, 1, "the successes in between reset the run");
    let mut quarantined = Lifecycle::start("counter", owner(), counter("q", Some(0)), "{}".into(), None, 2).unwrap();
    assert!(matches!(quarantined.call(0, count), Some(Err(Fault { then: AfterFault::Counted, .. }))));
    let Some(Err(Fault { then: AfterFault::Quarantined { message }, .. })) = quarantined.call(0, count) else { panic!("2 faults in a row") };
    assert!(message.contains("quarantined after 2 failed calls in a row"), "{message}");
    assert!(quarantined.call(0, count).is_none(), "a quarantined version is not called");
    quarantined.follow(&counter("fixed", None), None, "{}".into()).unwrap();
    assert_eq!(answer(&mut quarantined), Some(1), "a new build brings it back");
}

#[test]
fn a_build_that_rejects_its_config_leaves_the_running_one() {
    let mut lifecycle = Lifecycle::start("counter", owner(), counter("a", None), "{}".into(), None, 3).unwrap();
    answer(&mut lifecycle);
    let message = lifecycle.follow(&counter("b", None), None, "reject".into()).unwrap_err();
    assert!(message.contains("could not take over") && message.contains("keeps running"), "{message}");
    assert_eq!((answer(&mut lifecycle), statuses(&lifecycle)), (Some(2), vec![("a".into(), Status::Active)]));
}

#[test]
fn a_shadow_starts_from_the_active_state_and_is_promoted_with_its_own() {
    let mut lifecycle = Lifecycle::start("counter", owner(), counter("a", None), "{}".into(), None, 3).unwrap();
    answer(&mut lifecycle);
    lifecycle.follow(&counter("a", None), Some(&counter("s", None)), "{}".into()).unwrap();
    for _ in 0..3 {
        let active = answer(&mut lifecycle);
        let shadow = lifecycle.call_shadow(0, count);
        assert_eq!(active, shadow);
        lifecycle.compare(active == shadow);
    }
    let shadow = lifecycle.stats().into_iter().find(|s| s.status == Status::Shadow).unwrap();
    assert_eq!((shadow.agreement, shadow.compared_windows), (Some(1.0), Some(3)));
    lifecycle.call_shadow(0, count);
    lifecycle.follow(&counter("s", None), None, "{}".into()).unwrap();
    assert_eq!(answer(&mut lifecycle), Some(6), "the promoted shadow keeps its own count");
    let stats = lifecycle.stats();
    assert_eq!((stats.len(), stats[0].fingerprint.as_str(), stats[0].reloads), (1, "s", 1));
}

#[test]
fn stateless_plugins_get_the_same_probation() {
    let stateless = |fingerprint, traps_from| Stateless(counter(fingerprint, traps_from));
    let handler = Owner { tenant: "t".into(), pipeline: None };
    let mut lifecycle = Lifecycle::start("hook", handler, stateless("a", None), "{}".into(), None, 3).unwrap();
    assert_eq!((answer(&mut lifecycle), answer(&mut lifecycle)), (Some(1), Some(2)));
    lifecycle.follow(&stateless("b", Some(0)), None, "{}".into()).unwrap();
    assert_eq!(answer(&mut lifecycle), Some(1), "no state to hand over: a runs again from scratch");
    let stats = lifecycle.stats();
    assert_eq!((stats[0].kind.as_str(), stats[0].pipeline.as_str()), ("alert-handler", ""));
    assert_eq!(stats.iter().map(|s| (s.fingerprint.as_str(), s.status)).collect::<Vec<_>>(), [("a", Status::Active), ("b", Status::RolledBack)]);
}

#[test]
fn each_partition_keeps_its_own_state_through_swaps_rollbacks_and_checkpoints() {
    fn on<B: Build<Instance = CounterInstance>>(lifecycle: &mut Lifecycle<B>, partition: u32) -> u32 {
        match lifecycle.call(partition, count) {
            Some(Ok(n)) => n,
            Some(Err(Fault { then: AfterFault::RolledBack { retried: Ok(n), .. }, .. })) => n,
            _ => panic!("partition {partition} gave no count"),
        }
    }
    let mut lifecycle = Lifecycle::start("counter", owner(), counter("a", None), "{}".into(), None, 3).unwrap();
    assert_eq!([on(&mut lifecycle, 0), on(&mut lifecycle, 7), on(&mut lifecycle, 7)], [1, 1, 2]);
    lifecycle.follow(&counter("b", None), None, "{}".into()).unwrap();
    assert_eq!([on(&mut lifecycle, 0), on(&mut lifecycle, 7)], [2, 3], "each partition's state is handed over");
    lifecycle.follow(&counter("c", Some(3)), None, "{}".into()).unwrap();
    assert_eq!(on(&mut lifecycle, 0), 3, "partition 0 is below c's trap");
    assert_eq!(on(&mut lifecycle, 7), 4, "partition 7 traps in c: b is back with the states it handed over and makes the call");
    assert_eq!(on(&mut lifecycle, 0), 3, "partition 0 carries on from what b handed over");
    assert!(lifecycle.checkpoint(5).is_none(), "a partition never seen has no state");
    let (label, state) = lifecycle.checkpoint(7).unwrap().unwrap();
    let mut other = Lifecycle::start("counter", owner(), counter("b", None), "{}".into(), None, 3).unwrap();
    other.resume(7, &label, &state).unwrap();
    assert_eq!([on(&mut other, 7), on(&mut other, 0)], [5, 1], "another host takes partition 7's state only");
}
