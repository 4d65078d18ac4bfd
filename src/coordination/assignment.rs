//! Who should own which collection in a partitioned group: a pure function of the followed
//! collections, the live members and the current owners, so that every member, looking at the
//! same documents, computes the same answer.
//!
//! - Fair shares: the collections (at most `max_per_member` each) are split so that shares
//!   differ by at most one.
//! - Few moves: an owner that is live keeps its collections up to its share; the members that
//!   own more get the larger shares.
//! - The rest go, one by one in name order, to the member with room that ranks highest for
//!   that collection (rendezvous hashing, with a hash that is the same in every build).

use std::collections::{BTreeMap, BTreeSet};

/// The wanted owner of each collection that can be owned (with `max_per_member`, some may be
/// left out: they are missing from the map).
pub fn plan(
    collections: &BTreeSet<String>,
    members: &BTreeSet<String>,
    owners: &BTreeMap<String, String>,
    max_per_member: Option<usize>,
) -> BTreeMap<String, String> {
    let mut wanted = BTreeMap::new();
    if members.is_empty() {
        return wanted;
    }
    let quotas = quotas(collections, members, owners, max_per_member);
    let mut counts: BTreeMap<&str, usize> = members.iter().map(|m| (m.as_str(), 0)).collect();
    for c in collections {
        if let Some(owner) = owners.get(c).filter(|o| members.contains(*o)) {
            let count = counts.get_mut(owner.as_str()).expect("a member");
            if *count < quotas[owner.as_str()] {
                *count += 1;
                wanted.insert(c.clone(), owner.clone());
            }
        }
    }
    let rest: Vec<&String> = collections.iter().filter(|c| !wanted.contains_key(*c)).collect();
    for c in rest {
        let best = members.iter().filter(|m| counts[m.as_str()] < quotas[m.as_str()]).max_by_key(|m| rank(c, m));
        if let Some(member) = best {
            *counts.get_mut(member.as_str()).expect("a member") += 1;
            wanted.insert(c.clone(), member.clone());
        }
    }
    wanted
}

/// Each member's share: equal to within one; the larger shares go to the members that own
/// the most now (then by name).
fn quotas<'a>(
    collections: &BTreeSet<String>,
    members: &'a BTreeSet<String>,
    owners: &BTreeMap<String, String>,
    max_per_member: Option<usize>,
) -> BTreeMap<&'a str, usize> {
    let m = members.len();
    let total = max_per_member.map_or(collections.len(), |max| collections.len().min(max.saturating_mul(m)));
    let (base, extra) = (total / m, total % m);
    let owned = |member: &str| collections.iter().filter(|c| owners.get(*c).is_some_and(|o| o == member)).count();
    let mut order: Vec<(usize, &str)> = members.iter().map(|member| (owned(member), member.as_str())).collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    order.into_iter().enumerate().map(|(i, (_, member))| (member, base + usize::from(i < extra))).collect()
}

/// How much `member` wants `collection`: FNV-1a over both names (stable across builds and
/// machines, unlike the standard library's hasher).
fn rank(collection: &str, member: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in collection.bytes().chain([0]).chain(member.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV's low bits mix poorly for short, similar inputs: fold the high half in.
    hash ^ (hash >> 29)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn collections(n: usize) -> BTreeSet<String> {
        (0..n).map(|i| format!("db.c{i:02}")).collect()
    }

    fn shares(wanted: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
        let mut shares = BTreeMap::new();
        for owner in wanted.values() {
            *shares.entry(owner.clone()).or_insert(0) += 1;
        }
        shares
    }

    #[test]
    fn twelve_collections_over_three_members_are_owned_four_each_and_once() {
        let wanted = plan(&collections(12), &set(&["a", "b", "c"]), &BTreeMap::new(), None);
        assert_eq!(wanted.len(), 12, "every collection has an owner");
        assert_eq!(shares(&wanted).values().copied().collect::<Vec<_>>(), [4, 4, 4]);
    }

    #[test]
    fn shares_differ_by_at_most_one_and_respect_the_maximum() {
        for n in 0..30 {
            for m in 1..6 {
                let members: BTreeSet<String> = (0..m).map(|i| format!("m{i}")).collect();
                for max in [None, Some(1), Some(3)] {
                    let wanted = plan(&collections(n), &members, &BTreeMap::new(), max);
                    let counts: Vec<usize> = members.iter().map(|x| shares(&wanted).get(x).copied().unwrap_or(0)).collect();
                    let (lo, hi) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
                    assert!(hi - lo <= 1, "n={n} m={m} max={max:?}: {counts:?}");
                    assert_eq!(wanted.len(), max.map_or(n, |x| n.min(x * m)), "n={n} m={m} max={max:?}");
                    assert!(max.is_none_or(|x| hi <= x));
                }
            }
        }
    }

    #[test]
    fn a_member_that_joins_takes_only_its_share_from_the_others() {
        let all = collections(12);
        let two = plan(&all, &set(&["a", "b"]), &BTreeMap::new(), None);
        assert_eq!(shares(&two).values().copied().collect::<Vec<_>>(), [6, 6]);
        let three = plan(&all, &set(&["a", "b", "c"]), &two, None);
        let moved: Vec<_> = all.iter().filter(|c| two[*c] != three[*c]).collect();
        assert_eq!(moved.len(), 4, "only the newcomer's share moves");
        assert!(moved.iter().all(|c| three[*c] == "c"));
        assert_eq!(shares(&three).values().copied().collect::<Vec<_>>(), [4, 4, 4]);
    }

    #[test]
    fn a_member_that_leaves_has_its_collections_spread_over_the_others_and_nothing_else_moves() {
        let all = collections(12);
        let three = plan(&all, &set(&["a", "b", "c"]), &BTreeMap::new(), None);
        // "b" is gone; its leases still name it.
        let two = plan(&all, &set(&["a", "c"]), &three, None);
        assert_eq!(two.len(), 12);
        assert_eq!(shares(&two).values().copied().collect::<Vec<_>>(), [6, 6]);
        for c in &all {
            if three[c] != "b" {
                assert_eq!(two[c], three[c], "{c} kept its live owner");
            }
        }
    }

    #[test]
    fn every_member_computes_the_same_plan_and_a_settled_plan_is_stable() {
        let all = collections(10);
        let members = set(&["x", "y", "z"]);
        let first = plan(&all, &members, &BTreeMap::new(), None);
        assert_eq!(first, plan(&all, &members, &BTreeMap::new(), None));
        assert_eq!(plan(&all, &members, &first, None), first, "owners that hold their plan keep it");
        let mut counts: Vec<usize> = shares(&first).into_values().collect();
        counts.sort();
        assert_eq!(counts, [3, 3, 4]);
    }

    #[test]
    fn an_owner_over_its_share_gives_up_the_excess_and_unknown_owners_count_as_none() {
        let all = collections(6);
        let owners: BTreeMap<String, String> = all.iter().map(|c| (c.clone(), "a".to_string())).collect();
        let wanted = plan(&all, &set(&["a", "b"]), &owners, None);
        assert_eq!(shares(&wanted).values().copied().collect::<Vec<_>>(), [3, 3]);
        assert_eq!(all.iter().filter(|c| wanted[*c] == "a").count(), 3);
        assert!(plan(&all, &BTreeSet::new(), &owners, None).is_empty(), "no members, no owners");
        let gone = plan(&all, &set(&["b"]), &owners, Some(2));
        assert_eq!(shares(&gone).get("b"), Some(&2), "capped by the maximum; the rest stays unowned");
    }
}
