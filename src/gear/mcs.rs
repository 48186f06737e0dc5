//! MCS category pairs per gear, as OpenShift v2 computed them from the uid.

/// Maps a uid to `s0:cX,cY` (X < Y, both in 0..1024) so that every uid in 0..=523776 gets a
/// distinct pair; the same walk as origin-server's `get_mcs_label`.
pub fn label_for_uid(uid: u32) -> String {
    let setsize: u32 = 1023;
    let mut tier = setsize;
    let mut ord = uid;
    while ord > tier {
        ord -= tier;
        tier -= 1;
    }
    let tier = setsize - tier;
    format!("s0:c{},c{}", tier, ord + tier)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn known_values() {
        assert_eq!(label_for_uid(1), "s0:c0,c1");
        assert_eq!(label_for_uid(1023), "s0:c0,c1023");
        assert_eq!(label_for_uid(1024), "s0:c1,c2");
    }

    #[test]
    fn pairs_are_distinct_and_ordered() {
        let mut seen = HashSet::new();
        for uid in (400_000..450_000).step_by(7) {
            let l = label_for_uid(uid);
            let (a, b) = l.trim_start_matches("s0:c").split_once(",c").unwrap();
            let (a, b): (u32, u32) = (a.parse().unwrap(), b.parse().unwrap());
            assert!(a < b && b <= 1023, "{l}");
            assert!(seen.insert(l));
        }
    }
}
