use super::*;

fn node(concurrency: u32, interactive: bool) -> NodeState {
    let mut state = NodeState::new(concurrency, interactive);
    state.healthy = Some(true);
    state
}

#[test]
fn the_fastest_node_with_room_wins() {
    let now = Instant::now();
    let mut slow = node(2, false);
    slow.first_token_ms = Some(400.0);
    let mut fast = node(2, false);
    fast.first_token_ms = Some(50.0);
    assert_eq!(
        choose(&[&slow, &fast], &[], Priority::Batch, false, now),
        Choice::Node(1)
    );
    // Load counts: a busy fast node loses to an idle one that is a little slower.
    fast.busy_batch = 1;
    let mut idle = node(2, false);
    idle.first_token_ms = Some(60.0);
    assert_eq!(
        choose(&[&fast, &idle], &[], Priority::Batch, false, now),
        Choice::Node(1)
    );
    // Full nodes make the request wait; excluded and down nodes make it go nowhere.
    fast.busy_batch = 2;
    assert_eq!(
        choose(&[&fast], &[], Priority::Batch, false, now),
        Choice::Wait
    );
    assert_eq!(
        choose(&[&fast, &idle], &[1], Priority::Batch, false, now),
        Choice::Wait
    );
    // Batch work waits while an interactive request waits; the interactive one goes.
    assert_eq!(
        choose(&[&idle], &[], Priority::Batch, true, now),
        Choice::Wait
    );
    assert_eq!(
        choose(&[&idle], &[], Priority::Interactive, true, now),
        Choice::Node(0)
    );
    idle.healthy = Some(false);
    assert_eq!(
        choose(&[&idle], &[], Priority::Batch, false, now),
        Choice::Nowhere
    );
    assert_eq!(
        choose(&[], &[], Priority::Interactive, false, now),
        Choice::Nowhere
    );
}

#[test]
fn batch_work_leaves_interactive_work_a_slot() {
    let now = Instant::now();
    let mut shared = node(2, true);
    shared.start(Priority::Batch, now);
    assert!(!shared.has_room(Priority::Batch));
    assert!(shared.has_room(Priority::Interactive));
    // A node that only does batch work gives it every slot; so does a one-slot node.
    let mut batch_only = node(2, false);
    batch_only.start(Priority::Batch, now);
    assert!(batch_only.has_room(Priority::Batch));
    let single = node(1, true);
    assert!(single.has_room(Priority::Batch));
}

#[test]
fn the_breaker_opens_cools_down_and_closes() {
    let now = Instant::now();
    let mut state = node(1, false);
    state.start(Priority::Batch, now);
    state.failed(Priority::Batch, "HTTP 500".into(), now);
    assert_eq!(state.breaker, Breaker::Closed { failures: 1 });
    assert!(state.available(now));
    state.start(Priority::Batch, now);
    state.failed(Priority::Batch, "HTTP 500".into(), now);
    assert!(matches!(state.breaker, Breaker::Open { .. }));
    assert!(!state.available(now));
    assert_eq!(state.health(now), "cooling down");
    // After the cooldown one trial request goes through; its failure doubles the cooldown.
    let later = now + Duration::from_secs(6);
    assert!(state.available(later));
    state.start(Priority::Batch, later);
    assert_eq!(state.breaker, Breaker::HalfOpen);
    assert!(!state.available(later));
    state.failed(Priority::Batch, "refused".into(), later);
    assert_eq!(
        state.breaker,
        Breaker::Open {
            until: later + Duration::from_secs(10),
            cooldown: Duration::from_secs(10)
        }
    );
    // A healthy probe before the cooldown ends changes nothing; after it, it closes.
    state.probed(true, "ok", later + Duration::from_secs(1));
    assert!(matches!(state.breaker, Breaker::Open { .. }));
    state.probed(true, "ok", later + Duration::from_secs(11));
    assert_eq!(state.breaker, Breaker::Closed { failures: 0 });
    assert_eq!(state.health(later + Duration::from_secs(11)), "healthy");
    assert_eq!(state.failed, 3);
    assert_eq!(state.last_error.as_deref(), Some("refused"));
}

#[test]
fn successes_feed_the_latency_average() {
    let now = Instant::now();
    let mut state = node(1, false);
    state.start(Priority::Batch, now);
    state.succeeded(Priority::Batch, Duration::from_millis(100), Some(50.0));
    state.start(Priority::Batch, now);
    state.succeeded(Priority::Batch, Duration::from_millis(200), None);
    assert_eq!(state.first_token_ms, Some(130.0));
    assert_eq!(state.tokens_per_second, Some(50.0));
    assert_eq!((state.busy(), state.served), (0, 2));
    assert_eq!(backoff(0), Duration::from_millis(100));
    assert_eq!(backoff(9), Duration::from_millis(1600));
}
