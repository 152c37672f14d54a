//! The flow rule on real models: the planner borrows the other tiers' memory while it runs.

use std::time::{Duration, Instant};

use tierls::config::{Tier, TierConfig};
use tierls::core::budget::Machine;
use tierls::core::generation::GenerateRequest;
use tierls::models::embedded::test_model_path;
use tierls::models::tiers::{TierSet, TierStatus};
use tierls::models::{Cancel, ModelError, generate};

const GIB: u64 = 1024 * 1024 * 1024;

/// A CPU machine with this much RAM; each tier below needs about 0.8 GiB.
fn machine(ram: u64) -> Machine {
    Machine {
        gpus: Vec::new(),
        ram_total: ram,
        ram_available: ram,
        gpu_offload: false,
    }
}

fn tier_set(ram: u64) -> std::sync::Arc<TierSet> {
    let tiers = TierSet::new(machine(ram));
    let config = TierConfig {
        context: 512,
        ..TierConfig::default()
    };
    for tier in Tier::ALL {
        tiers.configure(tier, test_model_path(), &config).unwrap();
    }
    tiers.load(Tier::Fast).unwrap();
    tiers.load(Tier::Executor).unwrap();
    tiers
}

async fn wait_until_ready(tiers: &TierSet, tier: Tier) {
    let started = Instant::now();
    while tiers.status(tier) != TierStatus::Ready {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{tier} did not come back: {:?}",
            tiers.status(tier)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_planner_pauses_the_other_tiers_when_memory_is_short_and_they_come_back() {
    let _turn = crate::support::one_model_at_a_time();
    // Two tiers fit in 2 GiB (with headroom), three do not.
    let tiers = tier_set(2 * GIB);
    let flow = tiers.enter_flow().unwrap();
    assert_eq!(flow.paused(), &[Tier::Fast, Tier::Executor]);

    // A request for a paused tier is answered with the reason (`get` never waits).
    let err = tiers.get(Tier::Fast).err().unwrap();
    assert!(
        matches!(err, ModelError::TierPaused { tier: Tier::Fast }),
        "{err}"
    );
    insta::assert_snapshot!(err.to_string(), @"the fast tier is paused while the planner uses this machine's memory; it comes back when the plan is done");

    let planner = flow.planner().unwrap();
    let plan = generate(
        &*planner,
        0,
        GenerateRequest::text("Plan:\n1.", 4),
        Cancel::new(),
    )
    .await
    .unwrap();
    assert!(plan.usage.generated_tokens >= 1);
    drop(planner);
    drop(flow);

    assert!(
        matches!(
            tiers.get(Tier::Planner),
            Err(ModelError::TierNotLoaded { .. })
        ),
        "the planner unloads"
    );
    for tier in [Tier::Fast, Tier::Executor] {
        wait_until_ready(&tiers, tier).await;
        let model = tiers.get(tier).unwrap();
        let answer = generate(
            &*model,
            0,
            GenerateRequest::text("fn main() {", 2),
            Cancel::new(),
        )
        .await
        .unwrap();
        assert!(answer.usage.generated_tokens >= 1, "{tier} serves again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_enough_memory_nothing_pauses() {
    let _turn = crate::support::one_model_at_a_time();
    let tiers = tier_set(16 * GIB);
    let flow = tiers.enter_flow().unwrap();
    assert!(flow.paused().is_empty());
    assert!(
        tiers.get(Tier::Fast).is_ok(),
        "the fast tier keeps serving during the plan"
    );
    drop(flow);
    assert_eq!(tiers.status(Tier::Fast), TierStatus::Ready);
}

#[test]
fn unconfigured_and_unfit_tiers_are_clear_errors() {
    let tiers = TierSet::new(machine(GIB / 4));
    let err = tiers
        .configure(Tier::Planner, test_model_path(), &TierConfig::default())
        .unwrap_err();
    assert!(matches!(err, ModelError::DoesNotFit { .. }), "{err}");
    assert_eq!(
        tiers.get(Tier::Planner).err().unwrap().to_string(),
        "no model is configured for the planner tier (set `tiers.planner.model`)"
    );
    assert!(tiers.enter_flow().is_err());
}

/// A reload (a saved `tierls.toml`) on a machine that cannot hold the old model and the new
/// one: the tier takes no new requests, the one running on the old model finishes, then the
/// new model loads. The wait is bounded: a request that outlives it keeps the old model
/// alive on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_cannot_hold_both_models_drains_the_old_one_first() {
    let _turn = crate::support::one_model_at_a_time();
    // One tier (about 0.8 GiB) fits in 1.25 GiB with headroom, two do not.
    let tiers = TierSet::new(machine(GIB + GIB / 4));
    let config = TierConfig {
        context: 512,
        ..TierConfig::default()
    };
    tiers
        .configure(Tier::Fast, test_model_path(), &config)
        .unwrap();
    tiers.load(Tier::Fast).unwrap();
    let other = tempfile::tempdir().unwrap();
    let other_model = other.path().join("other-model.gguf");
    std::fs::copy(test_model_path(), &other_model).unwrap();

    let in_flight = tiers.get(Tier::Fast).unwrap();
    let reloading = {
        let (tiers, config, path) = (tiers.clone(), config.clone(), other_model.clone());
        std::thread::spawn(move || {
            tiers.reconfigure(Tier::Fast, path, &config, Duration::from_secs(60))
        })
    };
    let started = Instant::now();
    while tiers.status(Tier::Fast) != TierStatus::Loading {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            tiers.status(Tier::Fast)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // New requests are told the tier is loading; the one in flight still runs.
    assert!(matches!(
        tiers.get(Tier::Fast),
        Err(ModelError::TierLoading { tier: Tier::Fast })
    ));
    let answer = generate(
        &*in_flight,
        0,
        GenerateRequest::text("fn main", 4),
        Cancel::new(),
    )
    .await
    .unwrap();
    assert!(answer.usage.generated_tokens >= 1);
    // Still draining: the new model waits for the old one's request.
    assert_eq!(tiers.status(Tier::Fast), TierStatus::Loading);
    assert!(!reloading.is_finished());
    drop(in_flight);
    reloading.join().unwrap().unwrap();
    assert_eq!(
        tiers.describe(Tier::Fast),
        (Some(other_model.clone()), TierStatus::Ready)
    );

    // A request that outlives the bounded wait: the reload goes on, the request keeps its
    // model and finishes on it.
    let in_flight = tiers.get(Tier::Fast).unwrap();
    tiers
        .reconfigure(
            Tier::Fast,
            test_model_path(),
            &config,
            Duration::from_millis(100),
        )
        .unwrap();
    assert_eq!(
        tiers.describe(Tier::Fast),
        (Some(test_model_path()), TierStatus::Ready)
    );
    let answer = generate(
        &*in_flight,
        0,
        GenerateRequest::text("fn main", 4),
        Cancel::new(),
    )
    .await
    .unwrap();
    assert!(answer.usage.generated_tokens >= 1);
}
