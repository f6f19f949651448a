//! Where a chunk's copies go: a pure function of the chunk id and the
//! membership (rendezvous hashing, one node per zone before a second in any
//! zone), and `check` of the invariants any placement must keep. No I/O, so
//! it is property-tested against its invariants and a naive baseline.

use std::collections::BTreeSet;

use stowage_storage::types::{ChunkId, NodeId, Zone};

/// A cluster member as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    pub zone: Zone,
}

/// The rendezvous score of `node` for `chunk`: every node ranks every chunk
/// independently, so membership changes move only the chunks whose top
/// ranks changed.
fn score(chunk: &ChunkId, node: NodeId) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(chunk.as_bytes());
    h.update(&node.0.to_le_bytes());
    let out = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&out.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// The nodes that should hold `chunk`, best first: `replicas` distinct
/// members (fewer if the cluster is smaller), taking the best-ranked node of
/// each zone before a second node in any zone.
pub fn place(chunk: &ChunkId, members: &[Member], replicas: usize) -> Vec<NodeId> {
    let mut ranked: Vec<(u64, &Member)> = members.iter().map(|m| (score(chunk, m.id), m)).collect();
    // Ties (astronomically rare) break by id so the result is total.
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.id.cmp(&b.1.id)));
    let want = replicas.min(members.len());
    let mut chosen: Vec<NodeId> = Vec::with_capacity(want);
    let mut zones: BTreeSet<&Zone> = BTreeSet::new();
    for (_, m) in &ranked {
        if chosen.len() == want {
            break;
        }
        if zones.insert(&m.zone) {
            chosen.push(m.id);
        }
    }
    for (_, m) in &ranked {
        if chosen.len() == want {
            break;
        }
        if !chosen.contains(&m.id) {
            chosen.push(m.id);
        }
    }
    chosen
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlacementError {
    #[error("placement names node {0} twice")]
    Duplicate(NodeId),
    #[error("placement names node {0}, which is not a member")]
    NotAMember(NodeId),
    #[error("placement has {got} nodes, expected {want}")]
    WrongCount { got: usize, want: usize },
    #[error("placement spans {got} zones where {want} were possible")]
    ZonesNotSpread { got: usize, want: usize },
}

/// The invariants of any placement: distinct members, as many as asked (or
/// all), spread over as many zones as possible.
pub fn check(
    placement: &[NodeId],
    members: &[Member],
    replicas: usize,
) -> Result<(), PlacementError> {
    let mut seen = BTreeSet::new();
    let mut zones = BTreeSet::new();
    for id in placement {
        if !seen.insert(*id) {
            return Err(PlacementError::Duplicate(*id));
        }
        let m = members
            .iter()
            .find(|m| m.id == *id)
            .ok_or(PlacementError::NotAMember(*id))?;
        zones.insert(&m.zone);
    }
    let want = replicas.min(members.len());
    if placement.len() != want {
        return Err(PlacementError::WrongCount {
            got: placement.len(),
            want,
        });
    }
    let all_zones: BTreeSet<&Zone> = members.iter().map(|m| &m.zone).collect();
    let want_zones = want.min(all_zones.len());
    if zones.len() < want_zones {
        return Err(PlacementError::ZonesNotSpread {
            got: zones.len(),
            want: want_zones,
        });
    }
    Ok(())
}

/// What a membership cannot survive, for the start-up warning: with fewer
/// than three zones, losing one zone can lose the Raft majority.
pub fn zone_warning(members: &[Member]) -> Option<String> {
    let zones: BTreeSet<&Zone> = members.iter().map(|m| &m.zone).collect();
    if members.len() < 2 {
        return None;
    }
    match zones.len() {
        1 => Some(format!(
            "all {} members are in zone {}: losing that zone loses the registry",
            members.len(),
            members[0].zone
        )),
        2 => Some(
            "members span only two zones: losing the zone that holds the majority of voters \
             stops writes until it returns"
                .to_string(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn members(zones: &[u8]) -> Vec<Member> {
        zones
            .iter()
            .enumerate()
            .map(|(i, z)| Member {
                id: NodeId(i as u64 + 1),
                zone: Zone::parse(&format!("z{z}")).unwrap(),
            })
            .collect()
    }

    /// The naive baseline: among all orderings of the members by score, take
    /// zones greedily; computed by brute force over subsets for small sets.
    fn baseline(chunk: &ChunkId, ms: &[Member], replicas: usize) -> Vec<NodeId> {
        let want = replicas.min(ms.len());
        let all_zones: BTreeSet<&Zone> = ms.iter().map(|m| &m.zone).collect();
        let want_zones = want.min(all_zones.len());
        // Best subset: most zones first, then highest sum of ranks by
        // lexicographic score order.
        let n = ms.len();
        let mut best: Option<(Vec<u64>, Vec<NodeId>)> = None;
        for mask in 0u32..(1 << n) {
            if mask.count_ones() as usize != want {
                continue;
            }
            let pick: Vec<&Member> = (0..n)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| &ms[i])
                .collect();
            let zones: BTreeSet<&Zone> = pick.iter().map(|m| &m.zone).collect();
            if zones.len() < want_zones {
                continue;
            }
            let mut scores: Vec<u64> = pick.iter().map(|m| score(chunk, m.id)).collect();
            scores.sort_unstable_by(|a, b| b.cmp(a));
            let ids: BTreeSet<NodeId> = pick.iter().map(|m| m.id).collect();
            let better = match &best {
                None => true,
                Some((s, _)) => scores > *s,
            };
            if better {
                best = Some((scores, ids.into_iter().collect()));
            }
        }
        best.map(|b| b.1).unwrap_or_default()
    }

    #[test]
    fn three_nodes_three_zones_all_hold_everything() {
        let ms = members(&[0, 1, 2]);
        for i in 0..100u32 {
            let c = ChunkId::of(&i.to_le_bytes());
            let p = place(&c, &ms, 3);
            check(&p, &ms, 3).unwrap();
            assert_eq!(p.len(), 3);
        }
    }

    #[test]
    fn zone_warnings() {
        assert!(zone_warning(&members(&[0])).is_none());
        assert!(zone_warning(&members(&[0, 0, 0]))
            .unwrap()
            .contains("all 3"));
        assert!(zone_warning(&members(&[0, 0, 1])).is_some());
        assert!(zone_warning(&members(&[0, 1, 2])).is_none());
    }

    proptest! {
        #[test]
        fn placements_keep_their_invariants(
            zones in prop::collection::vec(0u8..4, 1..9),
            replicas in 1usize..5,
            seed in any::<u64>(),
        ) {
            let ms = members(&zones);
            let c = ChunkId::of(&seed.to_le_bytes());
            let p = place(&c, &ms, replicas);
            prop_assert_eq!(check(&p, &ms, replicas), Ok(()));
            prop_assert_eq!(&p, &place(&c, &ms, replicas), "deterministic");
        }

        #[test]
        fn zone_spread_matches_the_baseline(
            zones in prop::collection::vec(0u8..3, 1..8),
            replicas in 1usize..4,
            seed in any::<u64>(),
        ) {
            let ms = members(&zones);
            let c = ChunkId::of(&seed.to_le_bytes());
            let got: BTreeSet<NodeId> = place(&c, &ms, replicas).into_iter().collect();
            let want: BTreeSet<NodeId> = baseline(&c, &ms, replicas).into_iter().collect();
            // Same zone coverage as the best possible choice, and the same
            // nodes whenever every zone has exactly one candidate.
            let zone_of = |id: &NodeId| ms.iter().find(|m| m.id == *id).unwrap().zone.clone();
            let gz: BTreeSet<Zone> = got.iter().map(zone_of).collect();
            let wz: BTreeSet<Zone> = want.iter().map(zone_of).collect();
            prop_assert_eq!(gz.len(), wz.len());
            let distinct: BTreeSet<u8> = zones.iter().copied().collect();
            if distinct.len() == zones.len() {
                prop_assert_eq!(got, want);
            }
        }

        #[test]
        fn removing_an_unchosen_member_moves_nothing(
            zones in prop::collection::vec(0u8..4, 2..9),
            replicas in 1usize..4,
            seed in any::<u64>(),
            victim in any::<prop::sample::Index>(),
        ) {
            let ms = members(&zones);
            let c = ChunkId::of(&seed.to_le_bytes());
            let before = place(&c, &ms, replicas);
            let v = ms[victim.index(ms.len())].id;
            prop_assume!(!before.contains(&v));
            let rest: Vec<Member> = ms.into_iter().filter(|m| m.id != v).collect();
            prop_assert_eq!(place(&c, &rest, replicas), before);
        }
    }
}
