#!/bin/sh
# In the guest: runs "$@" in its own systemd scope with Delegate=yes (gearshift may enable
# cgroup controllers below it and move its processes into a leaf) at SELinux level s0. The
# level matters: pipes carry their creator's level, and a gear (s0:cX,cY) may not use a pipe at
# s0-s0:c0.c1023, root's ssh login range (see selinux/README.md). runcon execs /bin/sh (an
# entrypoint for unconfined_t); the command itself may live on the usr_t 9p share.
exec systemd-run --scope --quiet -p Delegate=yes -- runcon -l s0 -- /bin/sh -c 'exec "$@"' sh "$@"
