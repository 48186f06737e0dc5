//! Disk admission: the disk quotas of every gear on the node (apps' and add-ons', per their
//! profiles) must fit in the filesystem that holds the gears (the btrfs-loop image, or the
//! ext4/xfs quota filesystem), unless the node config sets `[disk] overcommit = true`, in
//! which case a warning is printed. Called under the node lock, so two creates cannot both
//! take the last room.

use crate::gear::isolation::quota;
use crate::node::Node;
use anyhow::{bail, Result};

/// Refuses `gears` more gears of `profile` for `what` (`app 'x'`, `add-on 'y'`, `gear 2 of
/// 'x'`) when their quotas do not fit beside those already given out; with
/// `disk.overcommit` it warns (on stderr) instead. The caller holds the node lock.
pub fn check(node: &Node, what: &str, profile: &str, gears: u64) -> Result<()> {
    let Some(size) = quota::capacity(node)? else {
        return Ok(()); // no backend enforces quotas: there is nothing to add up
    };
    let each = node.config.profile(profile)?.limits()?.disk_bytes;
    let ask = Ask {
        what,
        profile,
        gears,
        bytes: each.saturating_mul(gears),
    };
    match verdict(used(node)?, &ask, size, node.config.disk.overcommit) {
        Verdict::Fits => Ok(()),
        Verdict::Warn(w) => {
            eprintln!("warning: {w}");
            Ok(())
        }
        Verdict::Refuse(why) => bail!("{why}"),
    }
}

/// The disk quotas already given out: every gear of every app and add-on, per its profile (a
/// profile since removed from the config counts as 0).
fn used(node: &Node) -> Result<u64> {
    let apps = super::list(node)?.into_iter().flat_map(|a| a.gears);
    let addons = crate::addon::list(node)?.into_iter().flat_map(|a| a.gears);
    Ok(apps
        .chain(addons)
        .filter_map(|g| node.config.profiles.get(&g.profile)?.limits().ok())
        .map(|l| l.disk_bytes)
        .sum())
}

/// What is asked for: `gears` gears of `profile`, `bytes` of quota together.
struct Ask<'a> {
    what: &'a str,
    profile: &'a str,
    gears: u64,
    bytes: u64,
}

#[derive(Debug, PartialEq)]
enum Verdict {
    Fits,
    Warn(String),
    Refuse(String),
}

/// Whether `ask` fits on a filesystem of `size` bytes of which `used` are already promised.
fn verdict(used: u64, ask: &Ask, size: u64, overcommit: bool) -> Verdict {
    let total = used.saturating_add(ask.bytes);
    if total <= size {
        return Verdict::Fits;
    }
    let asked = format!(
        "{} ({} gear(s) of profile '{}', {} of disk each)",
        gib(ask.bytes),
        ask.gears,
        ask.profile,
        gib(ask.bytes / ask.gears.max(1))
    );
    if overcommit {
        return Verdict::Warn(format!(
            "the node's disk is overcommitted (disk.overcommit = true): {} asks for {asked}; gears already hold quotas of {} and the gears' filesystem holds {}, so gears may run out of disk before they reach their quota",
            ask.what,
            gib(used),
            gib(size)
        ));
    }
    Verdict::Refuse(format!(
        "cannot create {}: not enough disk on this node: it asks for {asked}, gears already hold quotas of {} of the {} the node has, {} is left. Choose a smaller profile (--profile), destroy an app you no longer need (`app destroy APP --confirm APP`), or ask the node's admin to grow the disk (disk.image_size) or allow overcommit (disk.overcommit = true in the node config)",
        ask.what,
        gib(used),
        gib(size),
        gib(size.saturating_sub(used))
    ))
}

/// Bytes in GiB with one decimal (`2.0 GiB`).
fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1 << 30;

    fn ask(gears: u64) -> Ask<'static> {
        Ask {
            what: "app 'three'",
            profile: "small",
            gears,
            bytes: gears * G,
        }
    }

    #[test]
    fn fits_up_to_the_size() {
        assert_eq!(verdict(0, &ask(1), G, false), Verdict::Fits);
        assert_eq!(verdict(G, &ask(1), 2 * G, false), Verdict::Fits);
        assert_eq!(verdict(0, &ask(2), 2 * G, false), Verdict::Fits);
    }

    #[test]
    fn refuses_beyond_it_saying_what_is_used_asked_and_left() {
        let Verdict::Refuse(e) = verdict(2 * G, &ask(1), 2 * G + G / 2, false) else {
            panic!("not refused");
        };
        assert!(e.starts_with("cannot create app 'three': not enough disk"), "{e}");
        assert!(e.contains("asks for 1.0 GiB (1 gear(s) of profile 'small'"), "{e}");
        assert!(e.contains("quotas of 2.0 GiB of the 2.5 GiB"), "{e}");
        assert!(e.contains("0.5 GiB is left"), "{e}");
        assert!(e.contains("disk.overcommit = true"), "{e}");
    }

    #[test]
    fn overcommit_warns_instead() {
        let Verdict::Warn(w) = verdict(2 * G, &ask(3), 2 * G, true) else {
            panic!("not warned");
        };
        assert!(w.contains("overcommitted") && w.contains("asks for 3.0 GiB"), "{w}");
        assert_eq!(verdict(0, &ask(1), 2 * G, true), Verdict::Fits);
    }
}
