//! Checks of the order pipelines the end-to-end tests run (Kafka and
//! JetStream alike): numbered orders, some of them poison, each of which
//! must come out as an output or, if poison, as a dead letter.
//!
//! Guarantees: each check names the first order that breaks it.

use std::collections::BTreeMap;
use std::ops::Range;

/// Asserts that each order of `orders` reached where it belongs exactly
/// once: a poison one (per `is_poison`) one dead letter and no output, any
/// other one output and no dead letter. The counts are per order number.
pub fn assert_each_order_once(
    orders: Range<usize>,
    is_poison: impl Fn(usize) -> bool,
    outputs: &BTreeMap<usize, usize>,
    dead: &BTreeMap<usize, usize>,
) {
    for order in orders {
        let (expected_out, expected_dead) = if is_poison(order) { (0, 1) } else { (1, 0) };
        assert_eq!(
            outputs.get(&order).copied().unwrap_or(0),
            expected_out,
            "outputs of order {order}"
        );
        assert_eq!(
            dead.get(&order).copied().unwrap_or(0),
            expected_dead,
            "dead letters of order {order}"
        );
    }
}

/// Asserts that no order of `orders` was lost: a poison one (per
/// `is_poison`) has a dead letter (`dead_lettered`), any other one an
/// output (`has_output`). Copies are allowed.
pub fn assert_none_lost(
    orders: Range<usize>,
    is_poison: impl Fn(usize) -> bool,
    has_output: impl Fn(usize) -> bool,
    dead_lettered: impl Fn(usize) -> bool,
) {
    for order in orders {
        if is_poison(order) {
            assert!(
                dead_lettered(order),
                "poison order {order} has no dead letter"
            );
        } else {
            assert!(has_output(order), "order {order} was lost");
        }
    }
}
